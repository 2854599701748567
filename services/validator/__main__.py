"""``python -m services.validator``: run one validator replica (settings from the environment)."""

from relay.runner import run_service
from services.validator.settings import ValidatorSettings
from services.validator.worker import main

if __name__ == "__main__":
    raise SystemExit(run_service("validator", ValidatorSettings, main))

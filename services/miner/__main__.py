"""``python -m services.miner``: run one miner replica until SIGTERM."""

from relay.runner import run_service
from services.miner.settings import MinerSettings
from services.miner.worker import main

if __name__ == "__main__":
    raise SystemExit(run_service("miner", MinerSettings, main))

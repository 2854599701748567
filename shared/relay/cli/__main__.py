"""``python -m relay.cli`` is ``mimrelay``."""

from relay.cli import main

main()

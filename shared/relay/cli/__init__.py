"""The ``mimrelay`` command line.

Commands live in their own modules and are imported only when called, so ``mimrelay --help`` stays
fast and a command's heavy imports (FastAPI, asyncpg) are paid only by that command. To add one,
write a ``click`` command in a module here and name it in ``_COMMANDS``.
"""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" of its click command
_COMMANDS: dict[str, str] = {
    "keygen": "relay.cli.objects:keygen",
    "create": "relay.cli.objects:create",
    "update": "relay.cli.objects:update",
    "verify": "relay.cli.objects:verify",
    "submit": "relay.cli.ingest:submit",
    "token": "relay.cli.tokens:token",
    "block": "relay.cli.blocks:block",
    "unblock": "relay.cli.blocks:unblock",
    "blocks": "relay.cli.blocks:blocks",
    "export-static": "relay.cli.export:export_static",
    "export": "relay.cli.backup:export",
    "fingerprint": "relay.cli.objects:fingerprint",
    "import": "relay.cli.ingest:import_",
    "mine": "relay.cli.mine:mine_command",
    "peers": "relay.cli.sync:peers",
    "sync": "relay.cli.sync:sync",
    "up": "relay.cli.node:up",
    "status": "relay.cli.status:status",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mimrelay")
def main() -> None:
    """mimrelay: a relay node for the Mim protocol."""

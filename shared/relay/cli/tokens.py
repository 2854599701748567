"""``mimrelay token create | list | revoke``: tokens for submitting on a node's public listener.

They speak to the gateway's local API (:mod:`relay.cli.api`: the node's, found through
``node.json``, or ``--api URL``), which is where a node takes writes on its operator's behalf.
``token create NAME [--rate N]`` prints a new token once (only its digest is kept); ``token list``
lists them; ``token revoke ID`` stops one (within the gateways' refresh time). A token is given to
``mimrelay submit --token-file FILE`` (or ``MIM_API_TOKEN``) to submit on a public listener.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from relay.cli.api import API, call, local_api, refusal_text
from relay.cli.running import REFUSED, fail, node_options

__all__ = ["token"]


@click.group()
def token() -> None:
    """Tokens for submitting on a node's public listener."""


@token.command("create")
@click.argument("name")
@click.option("--rate", type=click.IntRange(1), help="Objects a minute [the gateway's default].")
@API
@node_options
def create(
    name: str, rate: int | None, api: str | None, data_dir: Path | None, verbose: int
) -> None:
    """Make a token named NAME and print it (it is shown only this once)."""
    url = f"{local_api(api, data_dir, verbose)}/api/tokens"
    answer = call("POST", url, json={"name": name, "rate_per_minute": rate})
    if answer.status_code != 201:
        fail(f"the gateway refused: {refusal_text(answer)}", REFUSED)
    made = answer.json()
    click.echo(made["token"])
    click.echo(f"token {made['id']} ({made['rate_per_minute']} objects a minute)", err=True)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@API
@node_options
def listing(as_json: bool, api: str | None, data_dir: Path | None, verbose: int) -> None:
    """List the tokens (never the tokens themselves)."""
    answer = call("GET", f"{local_api(api, data_dir, verbose)}/api/tokens")
    if answer.status_code != 200:
        fail(f"the gateway refused: {refusal_text(answer)}", REFUSED)
    for t in answer.json():
        if as_json:
            click.echo(json.dumps(t))
        else:
            state = "revoked" if t["revoked_at"] else "works"
            click.echo(f"{t['id']}  {state:<7}  {t['rate_per_minute']:>7}/min  {t['name']}")


@token.command("revoke")
@click.argument("token_id")
@API
@node_options
def revoke(token_id: str, api: str | None, data_dir: Path | None, verbose: int) -> None:
    """Stop the token TOKEN_ID from working."""
    answer = call("DELETE", f"{local_api(api, data_dir, verbose)}/api/tokens/{token_id}")
    if answer.status_code != 200:
        fail(f"the gateway refused: {refusal_text(answer)}", REFUSED)
    click.echo(f"revoked {token_id}")

"""``mimrelay submit`` and ``mimrelay token``: the operator's writes, through the gateway.

Both speak to the gateway's local API (``MIM_GATEWAY_LOCAL_HOST:MIM_GATEWAY_LOCAL_PORT``, loopback
by default; ``--api URL`` names another), which is where a node takes writes on its operator's
behalf. With a token (``--token-file FILE`` or ``MIM_API_TOKEN``), ``submit`` may also be pointed
at a node's public listener.

``submit FILE`` (``-`` for stdin) sends the objects of FILE, in the forms ``mimrelay submit``
always read (JSON lines, a JSON array, ``{"kind", "object"}`` wrappers, ``--kind`` for bare
objects), in batches the gateway judges as the validators will: a receipt per object, queued or
rejected with the stage and reason. Exit 0 when every object was queued (or already was), 1 when
one was rejected or the node refused, 2 for a usage or file error.

``token create NAME [--rate N]`` prints a new token once (only its digest is kept);
``token list`` lists them; ``token revoke ID`` stops one (within the gateways' refresh time).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Final

import click
import httpx

from relay.bus import KINDS
from relay.cli.ingest import split_objects
from relay.cli.running import REFUSED, fail
from relay.settings import LocalApiSettings, load

__all__ = ["submit", "token"]

_BATCH: Final = 500  # objects per request; the gateway takes up to MIM_GATEWAY_SUBMIT_MAX_OBJECTS
_TIMEOUT_SECONDS: Final = 120.0
_SHOWN_REJECTIONS: Final = 20

KIND = click.Choice(list(KINDS), case_sensitive=False)
API = click.option(
    "--api",
    metavar="URL",
    help="The gateway API to use [the local API: MIM_GATEWAY_LOCAL_HOST:MIM_GATEWAY_LOCAL_PORT].",
)


def _api(given: str | None) -> str:
    if given:
        return given.rstrip("/")
    try:
        return load(LocalApiSettings).local_url
    except Exception as exc:
        fail(str(exc))


def _call(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request; the node out of reach exits 1 with one line."""
    try:
        return httpx.request(method, url, timeout=_TIMEOUT_SECONDS, **kwargs)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the gateway at {url}: {exc}", REFUSED)


def _refused(answer: httpx.Response) -> str:
    try:
        error = answer.json()["error"]
        return f"{answer.status_code} {error['rule']}: {error['reason']}"
    except (ValueError, KeyError, TypeError):
        return f"{answer.status_code} {answer.text[:200]}"


def _token(token_file: Path | None) -> str | None:
    if token_file is not None:
        try:
            return token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            fail(f"cannot read {token_file}: {exc.strerror or exc}")
    return os.environ.get("MIM_API_TOKEN") or None


def _items(file: Path, kind: str | None) -> list[dict[str, Any]]:
    try:
        raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    try:
        pieces = split_objects(raw, kind.lower() if kind else None)
    except ValueError as exc:
        fail(f"{file}: {exc}")
    items = []
    for n, (item_kind, body) in enumerate(pieces, 1):
        try:
            items.append({"kind": item_kind, "object": json.loads(body)})
        except ValueError:
            fail(f"{file}: object {n} is not JSON")
    return items


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--kind", "-k", type=KIND, help="Kind of bare objects (wrappers name their own).")
@API
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A file holding a token, for a public listener [MIM_API_TOKEN].",
)
def submit(file: Path, kind: str | None, api: str | None, token_file: Path | None) -> None:
    """Submit the objects in FILE through the gateway and print what was queued."""
    items = _items(file, kind)
    url = f"{_api(api)}/api/submit"
    token = _token(token_file)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    queued = duplicates = 0
    rejected: list[str] = []
    for start in range(0, len(items), _BATCH):
        answer = _call("POST", url, json=items[start : start + _BATCH], headers=headers)
        if answer.status_code not in (202, 422):
            fail(f"the gateway refused: {_refused(answer)}", REFUSED)
        for n, receipt in enumerate(answer.json()["queued"], start + 1):
            verdict = receipt["verdict"]
            if not verdict["ok"]:
                rejected.append(f"object {n} ({receipt['kind']}): {verdict['reason']}")
            elif receipt["duplicate"]:
                duplicates += 1
            else:
                queued += 1
    for line in rejected[:_SHOWN_REJECTIONS]:
        click.echo(f"rejected {line}", err=True)
    click.echo(f"queued {queued} object(s), {duplicates} already queued, {len(rejected)} rejected")
    if rejected:
        sys.exit(REFUSED)


@click.group()
def token() -> None:
    """Tokens for submitting on a node's public listener."""


@token.command("create")
@click.argument("name")
@click.option("--rate", type=click.IntRange(1), help="Objects a minute [the gateway's default].")
@API
def create(name: str, rate: int | None, api: str | None) -> None:
    """Make a token named NAME and print it (it is shown only this once)."""
    answer = _call("POST", f"{_api(api)}/api/tokens", json={"name": name, "rate_per_minute": rate})
    if answer.status_code != 201:
        fail(f"the gateway refused: {_refused(answer)}", REFUSED)
    made = answer.json()
    click.echo(made["token"])
    click.echo(f"token {made['id']} ({made['rate_per_minute']} objects a minute)", err=True)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@API
def listing(as_json: bool, api: str | None) -> None:
    """List the tokens (never the tokens themselves)."""
    answer = _call("GET", f"{_api(api)}/api/tokens")
    if answer.status_code != 200:
        fail(f"the gateway refused: {_refused(answer)}", REFUSED)
    for t in answer.json():
        if as_json:
            click.echo(json.dumps(t))
        else:
            state = "revoked" if t["revoked_at"] else "works"
            click.echo(f"{t['id']}  {state:<7}  {t['rate_per_minute']:>7}/min  {t['name']}")


@token.command("revoke")
@click.argument("token_id")
@API
def revoke(token_id: str, api: str | None) -> None:
    """Stop the token TOKEN_ID from working."""
    answer = _call("DELETE", f"{_api(api)}/api/tokens/{token_id}")
    if answer.status_code != 200:
        fail(f"the gateway refused: {_refused(answer)}", REFUSED)
    click.echo(f"revoked {token_id}")

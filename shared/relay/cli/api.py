"""The gateway's local API, where ``mimrelay submit`` and ``mimrelay token`` write as the operator.

``--api URL`` names the API to use. Without it, ``MIM_GATEWAY_LOCAL_HOST`` /
``MIM_GATEWAY_LOCAL_PORT``, when set, name the local API (a node run by compose or spread over
machines has no ``node.json``); otherwise the local API of the node running in the data directory,
as ``mimrelay up`` recorded it in ``node.json`` (one line and exit 1 when none runs).

A request that cannot reach the API, or an answer the command did not expect, is one line and
exit 1, never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

import click
import httpx

from relay.cli.local import running_state
from relay.cli.running import REFUSED, fail, load_settings
from relay.node_state import read_state
from relay.settings import LocalApiSettings, load

__all__ = ["API", "call", "local_api", "own_apis", "refusal_text"]

_TIMEOUT_SECONDS: Final = 120.0
_VARIABLES: Final = ("MIM_GATEWAY_LOCAL_HOST", "MIM_GATEWAY_LOCAL_PORT")

API = click.option(
    "--api",
    metavar="URL",
    help="The gateway API to use [the local API of the node in --data-dir, or the one"
    " MIM_GATEWAY_LOCAL_HOST:MIM_GATEWAY_LOCAL_PORT name].",
)


def _configured() -> str:
    try:
        return load(LocalApiSettings).local_url
    except Exception as exc:
        fail(str(exc))


def local_api(given: str | None, data_dir: Path | None, verbose: int) -> str:
    """The API to call: ``given``, else the configured local API, else the running node's."""
    if given:
        load_settings(data_dir, verbose)  # logs as -v asks
        return given.rstrip("/")
    settings = load_settings(data_dir, verbose)
    if any(os.environ.get(variable) for variable in _VARIABLES):
        return _configured()
    recorded = running_state(settings.data_dir).get("local_api_url")
    return str(recorded).rstrip("/") if recorded else _configured()


def own_apis(data_dir: Path) -> set[str]:
    """The URLs the node of this machine is known by without asking it: the public and local APIs
    ``node.json`` in ``data_dir`` records, and the local API its variables name when set."""
    try:
        recorded = read_state(data_dir)
    except (OSError, ValueError):  # no node.json: a node run by compose, or none
        recorded = {}
    found = {str(recorded.get(key) or "").rstrip("/") for key in ("api_url", "local_api_url")}
    if any(os.environ.get(variable) for variable in _VARIABLES):
        found.add(_configured())
    return found - {""}


def call(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request; the API out of reach exits 1 with one line."""
    try:
        return httpx.request(method, url, timeout=_TIMEOUT_SECONDS, **kwargs)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the gateway at {url}: {exc}", REFUSED)


def refusal_text(answer: httpx.Response) -> str:
    """``STATUS rule: reason`` of an error answer (or its first characters)."""
    try:
        error = answer.json()["error"]
        return f"{answer.status_code} {error['rule']}: {error['reason']}"
    except (ValueError, KeyError, TypeError):
        return f"{answer.status_code} {answer.text[:200]}"

"""``mimrelay submit`` against real servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from nats.aio.client import Client as NATS

from relay.bus import Layout
from relay.cli import main
from tests.helpers.cli import invoke
from tests.services.validator.helpers import make_post, wire


@pytest.fixture
def env(nats_url: str, fresh_database: str, layout: Layout) -> dict[str, str]:
    return {
        "MIM_NATS_URL": nats_url,
        "MIM_DATABASE_URL": fresh_database,
        "MIM_STREAM_PREFIX": layout.prefix,
    }


async def test_submit_queues_lines_arrays_and_wrappers(
    tmp_path: Path, env: dict[str, str], nc: NATS, layout: Layout
) -> None:
    """A file of JSON lines is queued; the same objects again as an array or in kind wrappers
    are recognised as already queued."""
    posts = [wire(make_post(n)) for n in range(3)]
    lines = tmp_path / "posts.jsonl"
    lines.write_bytes(b"\n".join(posts) + b"\n")
    array = tmp_path / "array.json"
    array.write_bytes(b"[ " + b" ,\n".join(posts) + b" ]")
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps([{"kind": "post", "object": json.loads(posts[0])}]))

    result = await invoke(["submit", str(lines), "--kind", "post"], env)
    assert result.exit_code == 0, result.output
    assert "queued 3 object(s), 0 already queued" in result.output
    result = await invoke(["submit", str(array), "--kind", "post"], env)
    assert "queued 0 object(s), 3 already queued" in result.output
    result = await invoke(["submit", str(wrapped)], env)
    assert result.exit_code == 0, result.output
    assert "queued 0 object(s), 1 already queued" in result.output  # same compact bytes
    info = await nc.jetstream().stream_info(layout.ingest_stream)
    assert info.state.messages == 3


def test_submit_without_a_kind_names_the_problem(tmp_path: Path, env: dict[str, str]) -> None:
    """A bare object without ``--kind`` is refused with exit 2 and a message naming the fix."""
    bare = tmp_path / "one.json"
    bare.write_bytes(wire(make_post(9)))
    result = CliRunner().invoke(main, ["submit", str(bare)], env=env)
    assert result.exit_code == 2
    assert "no `--kind` given" in result.output

"""``mimrelay submit`` against real servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from mim import canonical
from mim.create import create
from relay.bus import Layout
from tests.helpers.cli import invoke
from tests.services.validator.helpers import KEY, MINT, NOW, make_post, wire


@pytest.fixture
def env(nats_url: str, fresh_database: str, layout: Layout) -> dict[str, str]:
    return {
        "MIM_NATS_URL": nats_url,
        "MIM_DATABASE_URL": fresh_database,
        "MIM_STREAM_PREFIX": layout.prefix,
    }


async def _queued(nc: NATS, layout: Layout) -> int:
    return int((await nc.jetstream().stream_info(layout.ingest_stream)).state.messages)


async def test_submit_queues_lines_arrays_and_wrappers(
    tmp_path: Path, env: dict[str, str], nc: NATS, layout: Layout
) -> None:
    """A file of JSON lines is queued; the same objects again as an array or in kind wrappers
    are recognised as already queued, because wrapped objects are sent byte for byte."""
    posts = [wire(make_post(n)) for n in range(3)]
    lines = tmp_path / "posts.jsonl"
    lines.write_bytes(b"\n".join(posts) + b"\n")
    array = tmp_path / "array.json"
    array.write_bytes(b"[ " + b" ,\n".join(posts) + b" ]")
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_bytes(b'[{"kind": "post", "object": ' + posts[0] + b"}]")

    result = await invoke(["submit", str(lines), "--kind", "post"], env)
    assert result.exit_code == 0, result.output
    assert result.output == "queued 3 object(s), 0 already queued\n"
    result = await invoke(["submit", str(array)], env)
    assert result.output == "queued 0 object(s), 3 already queued\n"
    result = await invoke(["submit", str(wrapped)], env)
    assert result.exit_code == 0, result.output
    assert result.output == "queued 0 object(s), 1 already queued\n"
    assert await _queued(nc, layout) == 3


async def test_kinds_follow_from_the_fields_and_mix_in_one_file(
    tmp_path: Path, env: dict[str, str], nc: NATS, layout: Layout
) -> None:
    """Without `--kind`, a Key entity, a bare post and a wrapped post in one file each go to the
    subject of their own kind."""
    key = canonical.encode(create("key", {"name": "mixed"}, KEY, 6, NOW, MINT))
    post, other = wire(make_post(10)), wire(make_post(11))
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(key + b"\n" + post + b'\n{"kind":"post","object":' + other + b"}\n")
    result = await invoke(["submit", str(mixed)], env)
    assert result.exit_code == 0, result.output
    assert result.output == "queued 3 object(s), 0 already queued\n"
    js = nc.jetstream()
    info = await js.stream_info(layout.ingest_stream, subjects_filter=">")
    assert info.state.subjects == {
        layout.ingest_subject("key"): 1,
        layout.ingest_subject("post"): 2,
    }


async def test_a_separator_inside_a_post_does_not_split_the_file(
    tmp_path: Path, env: dict[str, str], nc: NATS, layout: Layout
) -> None:
    """28 posts whose bodies hold U+0085 raw (as canonical JSON writes it) are 28 objects: lines
    end at LF only."""
    where = {"board": "b" * 64, "thread": "c" * 64, "parent": "c" * 64}
    made = [
        canonical.encode(create("post", {**where, "body": f"{n}\u0085next"}, KEY, 6, NOW, MINT))
        for n in range(28)
    ]
    assert all(b"\xc2\x85" in line for line in made)
    posts = tmp_path / "posts.jsonl"
    posts.write_bytes(b"\n".join(made) + b"\n")
    result = await invoke(["submit", str(posts)], env)
    assert result.output == "queued 28 object(s), 0 already queued\n"
    assert await _queued(nc, layout) == 28


async def test_a_file_with_a_broken_item_is_refused_whole(
    tmp_path: Path, env: dict[str, str], nc: NATS, layout: Layout
) -> None:
    """An item whose fields fit two kinds and a line that is not JSON are each named with their
    line, exit 2, and nothing of the file is queued."""
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(wire(make_post(1)) + b'\n{"body": "thread or post?"}\nnot json\n')
    result = await invoke(["submit", str(broken)], env)
    assert result.exit_code == 2
    assert "line 2: `kind`: its fields fit a thread or post; name the kind" in result.output
    assert "line 3: `object`: not JSON" in result.output
    assert "2 item(s) do not parse; nothing was sent" in result.output
    assert "Traceback" not in result.output
    assert await _queued(nc, layout) == 0
    forced = await invoke(["submit", "--kind", "thread", str(broken)], env)
    assert forced.exit_code == 2
    assert "line 2" not in forced.output


async def test_progress_bar_on_request(
    tmp_path: Path, env: dict[str, str], nc: NATS, layout: Layout
) -> None:
    """`--progress` draws the bar on stderr up to the last object; by default, off a terminal,
    there is none."""
    many = tmp_path / "many.jsonl"
    many.write_bytes(b"\n".join(json.dumps({"location": f"h{n}", "port": n + 1}).encode()
                                for n in range(300)))  # fmt: skip
    shown = await invoke(["submit", "--progress", str(many)], env)
    assert "queueing [####################] 300/300" in shown.output
    quiet = await invoke(["submit", str(many)], env)
    assert quiet.output == "queued 0 object(s), 300 already queued\n"

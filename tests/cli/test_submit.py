"""``mimrelay submit`` through a running gateway's local API: what it reads, what it prints, what
reaches the ingest stream."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from nats.js import JetStreamContext

from mim import canonical
from tests.cli.conftest import posts as _posts
from tests.cli.conftest import queued as _queued
from tests.helpers.cli import invoke
from tests.services.gateway.conftest import Running, make


def _js(running: Running) -> JetStreamContext:
    assert running.gateway.nc is not None
    return running.gateway.nc.jetstream()


async def test_submit_queues_lines_arrays_and_wrappers(gateway: Running, tmp_path: Path) -> None:
    """A file of JSON lines is queued through the local API; the same objects again as an array
    or in kind wrappers are recognised as already queued; exit 0 each time, one line each."""
    posts = [canonical.encode(p) for p in _posts(3, "lines")]
    lines = tmp_path / "posts.jsonl"
    lines.write_bytes(b"\n".join(posts) + b"\n")
    array = tmp_path / "array.json"
    array.write_bytes(b"[ " + b" ,\n".join(posts) + b" ]")
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_bytes(b'[{"kind": "post", "object": ' + posts[0] + b"}]")
    api = ["--api", gateway.local]

    result = await invoke(["submit", str(lines), "--kind", "post", *api], {})
    assert result.exit_code == 0, result.output
    assert result.output == "queued 3 object(s), 0 already queued, 0 rejected\n"
    result = await invoke(["submit", str(array), *api], {})
    assert result.output == "queued 0 object(s), 3 already queued, 0 rejected\n"
    result = await invoke(["submit", str(wrapped), *api], {})
    assert result.exit_code == 0, result.output
    assert result.output == "queued 0 object(s), 1 already queued, 0 rejected\n"
    assert await _queued(gateway) == 3


async def test_kinds_follow_from_the_fields_and_mix_in_one_file(
    gateway: Running, tmp_path: Path
) -> None:
    """Without `--kind`, a Key entity, a bare post and a wrapped post in one file each go to the
    subject of their own kind."""
    key = canonical.encode(make("key", {"name": "mixed"}, 1_700_000_000))
    post, other = (canonical.encode(p) for p in _posts(2, "mixed kinds"))
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(key + b"\n" + post + b'\n{"kind":"post","object":' + other + b"}\n")
    result = await invoke(["submit", str(mixed), "--api", gateway.local], {})
    assert result.exit_code == 0, result.output
    assert result.output == "queued 3 object(s), 0 already queued, 0 rejected\n"
    layout = gateway.gateway.layout
    info = await _js(gateway).stream_info(layout.ingest_stream, subjects_filter=">")
    assert info.state.subjects == {
        layout.ingest_subject("key"): 1,
        layout.ingest_subject("post"): 2,
    }


async def test_a_separator_inside_a_post_does_not_split_the_file(
    gateway: Running, tmp_path: Path
) -> None:
    """28 posts whose bodies hold U+0085 raw (as canonical JSON writes it) are 28 objects: lines
    end at LF only."""
    where = {"board": "b" * 64, "thread": "c" * 64, "parent": "c" * 64}
    made = [make("post", {**where, "body": f"{n}\u0085next"}, 1_700_000_000 + n) for n in range(28)]
    encoded = [canonical.encode(p) for p in made]
    assert all(b"\xc2\x85" in line for line in encoded)
    posts = tmp_path / "posts.jsonl"
    posts.write_bytes(b"\n".join(encoded) + b"\n")
    result = await invoke(["submit", str(posts), "--api", gateway.local], {})
    assert result.output == "queued 28 object(s), 0 already queued, 0 rejected\n"
    assert await _queued(gateway) == 28


async def test_a_file_with_a_broken_item_is_refused_whole(gateway: Running, tmp_path: Path) -> None:
    """An item whose fields fit two kinds and a line that is not JSON are each named with their
    line, exit 2, and nothing of the file is queued; `--kind` settles the first."""
    (post,) = _posts(1, "broken")
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(canonical.encode(post) + b'\n{"body": "thread or post?"}\nnot json\n')
    api = ["--api", gateway.local]
    result = await invoke(["submit", str(broken), *api], {})
    assert result.exit_code == 2
    assert "line 2: `kind`: its fields fit a thread or post; name the kind" in result.output
    assert "line 3: `object`: not JSON" in result.output
    assert "2 item(s) do not parse; nothing was sent" in result.output
    assert "Traceback" not in result.output
    assert await _queued(gateway) == 0
    forced = await invoke(["submit", "--kind", "thread", str(broken), *api], {})
    assert forced.exit_code == 2
    assert "line 2" not in forced.output


async def test_each_rejection_is_named_and_the_rest_queued(
    gateway: Running, tmp_path: Path
) -> None:
    """A tampered post and an object that does not decode, among good ones, are each named on
    stderr with the stage and reason, the good ones are queued, and the exit status is 1."""
    good, tampered, other = _posts(3, "mixed")
    tampered = replace(tampered, body="changed after signing")
    lines = [
        canonical.encode(good),
        canonical.encode(tampered),
        b'{"kind": "post", "object": {"board": 5}}',
        canonical.encode(other),
    ]
    file = tmp_path / "mixed.jsonl"
    file.write_bytes(b"\n".join(lines) + b"\n")
    result = await invoke(["submit", str(file), "--api", gateway.local], {})
    assert result.exit_code == 1
    assert result.stdout == "queued 2 object(s), 0 already queued, 2 rejected\n"
    assert "rejected line 2 (post): signature: " in result.stderr
    assert "rejected line 3 (post): decode: `post.board`: number 5 where a string" in result.stderr
    assert await _queued(gateway) == 2


async def test_progress_bar_on_request(gateway: Running, tmp_path: Path) -> None:
    """`--progress` draws the bar on stderr up to the last object; by default, off a terminal,
    there is none."""
    many = tmp_path / "many.jsonl"
    many.write_bytes(b"\n".join(canonical.encode(p) for p in _posts(300, "many")))
    shown = await invoke(["submit", "--progress", str(many), "--api", gateway.local], {})
    assert "queueing [####################] 300/300" in shown.stderr
    quiet = await invoke(["submit", str(many), "--api", gateway.local], {})
    assert quiet.output == "queued 0 object(s), 300 already queued, 0 rejected\n"

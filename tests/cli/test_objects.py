"""`mimrelay keygen | create | update | verify`, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mim import entities, verify
from tests.vectors import reference, section

MIN_POW = reference()["profiles"][2]["minimum_pow_strength_all_entity_types"]


def mimrelay(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


def _lines(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("kind", entities.PROVABLE_KINDS)
def test_verify_command_agrees_with_library(kind: str, tmp_path: Path) -> None:
    """Every vector object of a kind, fed as JSON lines, gets the library's verdict line by line,
    and the exit code says whether all were accepted."""
    records = [
        r
        for name in ("entities", "negative_cases", "edge_cases_accepted_or_surprising")
        for r in section(name)
        if r["entity_type"] == kind
    ]
    source = tmp_path / "objects.jsonl"
    source.write_text("\n".join(r["object_json"] for r in records) + "\n")
    result = mimrelay("verify", "--kind", kind, "--min-pow", str(MIN_POW), str(source))
    policy = verify.Policy.uniform(MIN_POW)
    expected = [verify.verify(kind, r["object_json"], policy) for r in records]
    lines = _lines(result)
    assert [line["index"] for line in lines] == list(range(len(records)))
    assert [line["ok"] for line in lines] == [v.ok for v in expected]
    assert [line["stage"] for line in lines] == [v.stage for v in expected]
    assert result.returncode == (0 if all(v.ok for v in expected) else 1)


def test_keygen_create_update_verify_round_trip(tmp_path: Path) -> None:
    """A key made by keygen signs a post made by create; its update verifies; verify exits 0."""
    key = tmp_path / "alice.key"
    assert mimrelay("keygen", "--out", str(key)).returncode == 0
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    made = mimrelay(
        "create", "post", "--key", str(key), "--difficulty", "6",
        "--set", "board=" + "b" * 64, "--set", "thread=" + "c" * 64,
        "--set", "parent=" + "c" * 64, "--set", "body=hello <there>",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    post = json.loads(made.stdout)
    assert post["body"] == "hello <there>"
    assert post["owner_publickey"] == json.loads(key.read_text())["public_key"]
    updated = mimrelay(
        "update", "post", "--key", str(key), "--difficulty", "6", "--set", "body=edited",
        stdin=made.stdout,
    )  # fmt: skip
    assert updated.returncode == 0, updated.stderr
    assert json.loads(updated.stdout)["body"] == "edited"
    checked = mimrelay(
        "verify", "--kind", "post", "--min-pow", "6", "-", stdin=made.stdout + updated.stdout
    )
    assert [line["ok"] for line in _lines(checked)] == [True, True]
    assert checked.returncode == 0


def test_verify_reads_arrays_and_reports_garbage(tmp_path: Path) -> None:
    """An array input gives one line per element; a garbage line is rejected at decode, exit 1."""
    posts = [r["object_json"] for r in section("entities") if r["entity_type"] == "post"][:2]
    as_array = mimrelay(
        "verify",
        "--kind",
        "post",
        "--min-pow",
        str(MIN_POW),
        "-",
        stdin=f"[{','.join(posts)}]".encode(),
    )
    assert len(_lines(as_array)) == 2
    garbage = mimrelay("verify", "--kind", "post", "-", stdin=posts[0].encode() + b"\nnot json\n")
    lines = _lines(garbage)
    assert lines[1]["stage"] == "decode"
    assert garbage.returncode == 1


def test_usage_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    """A missing file, a missing key file, an unknown field: exit 2 and a message, no traceback."""
    cases = [
        ("verify", "--kind", "post", str(tmp_path / "missing.json")),
        ("create", "post", "--key", str(tmp_path / "missing.key"), "--difficulty", "1"),
        ("create", "post", "--difficulty", "1", "--set", "colour=red"),
        ("verify", "--kind", "post", "-"),
    ]
    for args in cases:
        result = mimrelay(*args)
        assert result.returncode == 2, args
        assert b"Traceback" not in result.stderr
        assert result.stderr.strip()


def test_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    """keygen refuses to overwrite a key file."""
    key = tmp_path / "k.json"
    assert mimrelay("keygen", "--out", str(key)).returncode == 0
    before = key.read_bytes()
    assert mimrelay("keygen", "--out", str(key)).returncode == 2
    assert key.read_bytes() == before
    assert os.access(key, os.R_OK)

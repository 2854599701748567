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
from mim.signing import key_fingerprint
from mim.verify import TRUSTED_CA_PUBLIC_KEY
from tests.vectors import ids, reference, section

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
    """A key made by keygen signs its Key entity, kept beside the key file, and a post whose
    owner is that entity's fingerprint; the post's update verifies; verify exits 0."""
    key = tmp_path / "alice.key"
    assert mimrelay("keygen", "--out", str(key)).returncode == 0
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    entity = mimrelay("create", "key", "--key", str(key), "--difficulty", "6", "--set", "name=a")
    assert entity.returncode == 0, entity.stderr
    assert (tmp_path / "alice.key.entity.json").read_bytes() == entity.stdout
    made = mimrelay(
        "create", "post", "--key", str(key), "--difficulty", "6",
        "--set", "board=" + "b" * 64, "--set", "thread=" + "c" * 64,
        "--set", "parent=" + "c" * 64, "--set", "body=hello <there>",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stderr == b""
    post = json.loads(made.stdout)
    assert post["body"] == "hello <there>"
    assert post["owner"] == json.loads(entity.stdout)["fingerprint"]
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
    assert (
        mimrelay("fingerprint", "-", stdin=made.stdout).stdout.decode()
        == post["fingerprint"] + "\n"
    )


def test_owner_is_the_key_entity_fingerprint_as_in_the_reference() -> None:
    """Every signed object the reference made names as owner the fingerprint of the Key entity
    of its signing key, which is what `create` does; the SHA-256 of the key is not it."""
    made = section("entities")
    key_entities = {r["public_key_hex"]: r["object"]["fingerprint"] for r in made
                    if r["entity_type"] == "key" and not r["is_update"]}  # fmt: skip
    signed = [r for r in made if r["entity_type"] != "key" and r["signed"]]
    assert signed
    for record in signed:
        owner = record["object"]["owner"]
        assert owner == key_entities[record["public_key_hex"]], record["id"]
        assert owner != key_fingerprint(record["public_key_hex"])


def test_create_without_a_key_entity_says_how_to_make_one(tmp_path: Path) -> None:
    """A board signed with a key that has no Key entity yet is refused (exit 2) with the command
    that makes one; `--set owner=` makes it anyway."""
    key = tmp_path / "k.key"
    assert mimrelay("keygen", "--out", str(key)).returncode == 0
    refused = mimrelay(
        "create", "board", "--key", str(key), "--difficulty", "1", "--set", "name=bb"
    )
    assert refused.returncode == 2
    assert f"mimrelay create key --key {key} --set name=NAME" in refused.stderr.decode()
    assert refused.stdout == b""
    owned = mimrelay(
        "create", "board", "--key", str(key), "--difficulty", "1", "--set", "name=bb",
        "--set", "owner=" + "f" * 64,
    )  # fmt: skip
    assert owned.returncode == 0, owned.stderr
    assert json.loads(owned.stdout)["owner"] == "f" * 64


ENTITLEMENT = [c for c in section("negative_cases") if "entitlement" in c["id"]]


@pytest.mark.parametrize("case", ENTITLEMENT, ids=ids(ENTITLEMENT))
def test_ca_only_typeclasses_are_refused_without_the_ca_key(
    case: dict[str, Any], tmp_path: Path
) -> None:
    """A trust state of a typeclass the reference refuses from any key but its CA's (failing its
    entitlements stage) is refused by `create` before any work, saying why."""
    assert case["verify"]["frontend"]["failed_stage"] == "entitlements"
    key = tmp_path / "k.key"
    assert mimrelay("keygen", "--out", str(key)).returncode == 0
    fields = case["object"]
    refused = mimrelay(
        "create", "truststate", "--key", str(key), "--difficulty", "21",
        "--set", f"target={fields['target']}", "--set", f"typeclass={fields['typeclass']}",
        "--set", f"type={fields['type']}", "--set", "owner=" + "f" * 64,
    )  # fmt: skip
    assert refused.returncode == 2
    message = refused.stderr.decode()
    assert f"typeclass {fields['typeclass']}" in message
    assert "trusted CA" in message and TRUSTED_CA_PUBLIC_KEY[:16] in message


def test_create_address_fills_the_location_type() -> None:
    """`create address` prints an address with version 1 and the location type of its location;
    one without a port is refused, and so is a key."""
    for location, kind in (("127.0.0.1", 4), ("::1", 6), ("relay.example", 3)):
        made = mimrelay("create", "address", "--set", f"location={location}", "--set", "port=8090")
        assert made.returncode == 0, made.stderr
        address = json.loads(made.stdout)
        assert (address["location_type"], address["entity_version"]) == (kind, 1)
        assert verify.verify("address", made.stdout, verify.Policy.uniform(21)).ok
    assert mimrelay("create", "address", "--set", "location=h").returncode == 2
    signed = mimrelay("create", "address", "--key", "k", "--set", "location=h", "--set", "port=1")
    assert signed.returncode == 2


def test_verify_cuts_lines_at_lf_only() -> None:
    """A CR between the fields of an object (JSON white space) and a CRLF line end leave every
    later verdict on its own index."""
    posts = [r["object_json"] for r in section("entities") if r["entity_type"] == "post"][:3]
    spaced = posts[0].replace(',"creation"', ',\r"creation"', 1)
    text = f"{spaced}\r\n{posts[1]}\n{posts[2]}\n".encode()
    lines = _lines(mimrelay("verify", "--kind", "post", "--min-pow", str(MIN_POW), "-", stdin=text))
    assert [line["index"] for line in lines] == [0, 1, 2]
    assert [line["stage"] for line in lines] == [
        verify.verify("post", p, verify.Policy.uniform(MIN_POW)).stage for p in posts
    ]


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

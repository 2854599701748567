"""``mimrelay keygen | create | update | verify``: make and check Mim objects from the shell.

Key files are JSON: ``{"type": "ed25519", "public_key": <hex>, "private_key": <Go's 128-hex
seed‖public form>}``, written with mode 0600. Objects are printed as the reference's canonical
JSON, one per line, so they can be piped into ``mimrelay verify`` or ``mimrelay submit``.

The reference client attributes what an author makes to the fingerprint of the author's Key
entity (``owner``, PROTOCOL.md §19.4). ``create key --key FILE`` therefore keeps the Key entity it
makes beside the key file, in ``FILE.entity.json``, and ``create`` of any other kind takes its
``owner`` from there (``--set owner=...`` overrides it).

Proofs of work are mined by the miners of the node running in the data directory (``--data-dir``,
``MIM_DATA_DIR``; or at ``MIM_NATS_URL``), else in this process; ``-v`` logs which.

Exit codes: 0 success (``verify``: every object accepted), 1 ``verify`` rejected an object,
2 a usage, file or input error (a message on stderr, never a traceback).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import click

from mim import canonical, entities
from mim import pow as mim_pow
from mim import verify as mim_verify
from mim.create import address as create_address
from mim.create import create as create_object
from mim.create import update as update_object
from mim.errors import MimError
from mim.signing import SigningKey
from relay.bus import Layout
from relay.cli.files import read_items
from relay.cli.local import miners
from relay.cli.running import fail, load_settings, node_options
from relay.mining import service_minter

#: The reference's proof-of-work bailout (PROTOCOL.md §7.2 step 6).
POW_DEADLINE_SECONDS = 600.0

KIND = click.Choice(list(entities.PROVABLE_KINDS), case_sensitive=False)
#: What ``create`` makes: every provable kind, and addresses.
CREATED = click.Choice(list(entities.KINDS), case_sensitive=False)
#: JSON white space: what may surround an object on a line of ``verify``'s input.
_BLANK = b" \t\r\n"


# --------------------------------------------------------------------------- key files


def write_key_file(path: Path, key: SigningKey) -> None:
    body = json.dumps(
        {"type": "ed25519", "public_key": key.public_hex, "private_key": key.private_hex},
        indent=2,
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(body + "\n")


def entity_file(key_file: Path) -> Path:
    """Where the Key entity made with ``key_file`` is kept."""
    return key_file.with_name(key_file.name + ".entity.json")


def record_key_entity(key_file: Path, entity: entities.Key) -> None:
    """Keep ``entity`` beside ``key_file``, replacing any kept before."""
    target = entity_file(key_file)
    partial = target.with_name(f".{target.name}.partial")
    try:
        partial.write_text(canonical.dumps(entity) + "\n", encoding="utf-8")
        partial.replace(target)
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror or exc}")


def owner_of(key_file: Path, key: SigningKey) -> str:
    """The fingerprint of the Key entity kept beside ``key_file``: the ``owner`` of what it
    signs. One line and exit 2 if there is none, or it is another key's."""
    path = entity_file(key_file)
    try:
        entity = entities.parse("key", path.read_bytes())
    except FileNotFoundError:
        fail(
            f"no Key entity is kept beside {key_file}: make it first with `mimrelay create key"
            f" --key {key_file} --set name=NAME` (the reference attributes what you make to its"
            " fingerprint), or give --set owner=FINGERPRINT"
        )
    except (OSError, MimError) as exc:
        fail(f"{path} is not a Key entity: {exc}")
    assert isinstance(entity, entities.Key)
    if entity.key.lower() != key.public_hex:
        fail(f"{path} is the Key entity of another key than {key_file}'s")
    return entity.fingerprint


def read_key_file(path: Path) -> SigningKey:
    try:
        data = json.loads(path.read_text())
        return SigningKey.from_private_hex(data["private_key"])
    except FileNotFoundError:
        fail(f"key file {path} does not exist (make one with `mimrelay keygen --out {path}`)")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        fail(f"key file {path} is not a mimrelay key file: {exc}")


@click.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the key here (mode 0600; never overwrites). Default: print to stdout.",
)
def keygen(out: Path | None) -> None:
    """Make a new Ed25519 key and write it as a key file."""
    key = SigningKey.generate(secrets.token_bytes(32))
    if out is None:
        click.echo(
            json.dumps(
                {"type": "ed25519", "public_key": key.public_hex, "private_key": key.private_hex}
            )
        )
        return
    try:
        write_key_file(out, key)
    except FileExistsError:
        fail(f"{out} already exists; refusing to overwrite a key")
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror}")
    click.echo(f"wrote {out} (public key {key.public_hex})", err=True)


# --------------------------------------------------------------------------- create / update


def _typed_values(kind: str, assignments: tuple[str, ...]) -> dict[str, Any]:
    """``field=value`` pairs → typed values, decoded by the protocol's own decoder.

    A string field takes the text as is; any other field takes JSON (``typeclass=1``,
    ``board_owners=[{"key_fingerprint":"…","level":1}]``).
    """
    cls = entities.entity_class(kind)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    document: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep:
            fail(f"--set {assignment!r}: expected field=value")
        if name not in fields:
            fail(f"--set {name}: {kind} has no field {name!r}")
        if fields[name].type in ("str", str):
            document[name] = text
        else:
            try:
                document[name] = json.loads(text)
            except json.JSONDecodeError:
                fail(f"--set {name}: {text!r} is not a JSON value")
    try:
        obj = canonical.loads(cls, json.dumps(document))
    except MimError as exc:
        fail(exc.reason)
    return {name: getattr(obj, name) for name in document}


def _minter(data_dir: Path | None, verbose: int) -> mim_pow.Minter:
    """The miners of the running node (or at ``MIM_NATS_URL``), else a search in this process.

    With ``-v``, which one did the work is logged on stderr (``pow_mined`` where=service, or
    ``pow_mining_in_process`` with the reason); stdout stays the object.
    """
    settings = miners(load_settings(data_dir, verbose))
    layout = Layout(settings.stream_prefix)
    return service_minter(settings.nats_url, timeout=POW_DEADLINE_SECONDS, layout=layout)


def _emit(obj: entities.Provable) -> None:
    click.echo(canonical.dumps(obj))


DIFFICULTY = click.option(
    "--difficulty",
    type=click.IntRange(0, mim_pow.MAX_DIFFICULTY),
    default=mim_verify.DEFAULT_MIN_POW,
    show_default=True,
    help="Proof-of-work strength in bits (the network's minimum is 21).",
)
SET = click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="FIELD=VALUE",
    help="A field of the object; repeat for several. Non-string fields take JSON.",
)


@click.command()
@click.argument("kind", type=CREATED)
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Key file to sign with; without it the object is anonymous.",
)
@DIFFICULTY
@SET
@node_options
def create(
    kind: str,
    key_file: Path | None,
    difficulty: int,
    assignments: tuple[str, ...],
    data_dir: Path | None,
    verbose: int,
) -> None:
    """Create a new object of KIND: sign it, prove work, fingerprint it, print it.

    An address is neither signed nor proved: it is printed with its fields.
    """
    kind = kind.lower()
    values = _typed_values(kind, assignments)
    if kind == "address":
        if key_file is not None:
            fail("addresses are not signed: drop --key")
        try:
            click.echo(canonical.dumps(create_address(values)))
        except MimError as exc:
            fail(exc.reason)
        return
    key = read_key_file(key_file) if key_file is not None else None
    if key is not None and key_file is not None and kind != "key" and "owner" not in values:
        values["owner"] = owner_of(key_file, key)
    try:
        obj = create_object(
            kind, values, key, difficulty, int(time.time()), _minter(data_dir, verbose)
        )
    except MimError as exc:
        fail(exc.reason)
    if isinstance(obj, entities.Key) and key_file is not None:
        record_key_entity(key_file, obj)
    _emit(obj)


@click.command()
@click.argument("kind", type=KIND)
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The owner's key file.",
)
@DIFFICULTY
@SET
@node_options
def update(
    kind: str,
    key_file: Path,
    difficulty: int,
    assignments: tuple[str, ...],
    data_dir: Path | None,
    verbose: int,
) -> None:
    """Update an object of KIND read from stdin: change mutable fields, prove, print it."""
    kind = kind.lower()
    key = read_key_file(key_file)
    raw = sys.stdin.buffer.read()
    try:
        current = entities.parse(kind, raw)
    except MimError as exc:
        fail(f"stdin: {exc.reason}")
    assert not isinstance(current, entities.Address)
    values = _typed_values(kind, assignments)
    now = max(int(time.time()), current.last_update + 1, current.creation + 1)
    try:
        obj = update_object(current, values, key, difficulty, now, _minter(data_dir, verbose))
    except MimError as exc:
        fail(exc.reason)
    _emit(obj)


# --------------------------------------------------------------------------- verify


def read_documents(raw: bytes) -> list[Any]:
    """One JSON object, a JSON array of objects, or JSON lines (cut at LF) → the objects, in order.

    Each object is kept in the decoder's form so it decodes as if it had been sent alone.
    """
    if not raw.strip(_BLANK):
        fail("no input: expected a JSON object, a JSON array or JSON lines")
    try:
        return canonical.objects(raw)
    except MimError:
        pass  # not one document: JSON lines
    documents: list[Any] = []
    for line in raw.split(b"\n"):  # LF only: a CR is JSON white space, not the end of a line
        if line.strip(_BLANK):
            try:
                documents.append(canonical.document(line))
            except MimError as exc:
                documents.append(exc)
    return documents


@click.command()
@click.argument("source", type=click.File("rb"), default="-")
@click.option("--kind", type=KIND, required=True, help="Kind of every object in the input.")
@click.option(
    "--min-pow",
    type=click.IntRange(0, mim_pow.MAX_DIFFICULTY),
    default=mim_verify.DEFAULT_MIN_POW,
    show_default=True,
    help="Minimum proof-of-work strength for objects and their updates.",
)
@click.option(
    "--allow-anonymous", is_flag=True, help="Accept objects with no key and no signature."
)
@click.option("--allow-ecdsa", is_flag=True, help="Accept ECDSA keys besides Ed25519.")
def verify(source: Any, kind: str, min_pow: int, allow_anonymous: bool, allow_ecdsa: bool) -> None:
    """Verify objects from SOURCE (a file, or - for stdin); print one verdict line each.

    Exit 0 if every object is accepted, 1 if any is rejected, 2 for a usage or file error.
    """
    kind = kind.lower()
    policy = mim_verify.Policy.uniform(
        min_pow, allow_anonymous=allow_anonymous, allow_ecdsa=allow_ecdsa
    )
    try:
        raw = source.read()
    except OSError as exc:
        fail(f"cannot read input: {exc}")
    all_ok = True
    cls = entities.entity_class(kind)
    for index, document in enumerate(read_documents(raw)):
        if isinstance(document, MimError):
            verdict = mim_verify.Verdict(kind, False, document.stage, document.reason)
        else:
            try:
                verdict = mim_verify.verify_entity(canonical.loads(cls, document), policy)
            except MimError as exc:
                verdict = mim_verify.Verdict(kind, False, exc.stage, exc.reason)
        all_ok = all_ok and verdict.ok
        line = {
            "index": index,
            "fingerprint": verdict.fingerprint,
            "ok": verdict.ok,
            "stage": verdict.stage,
            "reason": verdict.reason,
        }
        click.echo(json.dumps(line, ensure_ascii=False))
    sys.exit(0 if all_ok else 1)


# --------------------------------------------------------------------------- fingerprint


@click.command()
@click.argument(
    "files",
    nargs=-1,
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
)
@click.option("--kind", type=KIND, help="Kind of the bare objects [the kind their fields name].")
def fingerprint(files: tuple[Path, ...], kind: str | None) -> None:
    """Print the fingerprint of each object in FILES (- for stdin), one per line.

    The fingerprint is the one the object states (`mimrelay verify` checks that it holds).
    """
    fingerprints = []
    for where, item_kind, body in read_items(files, kind.lower() if kind else None, "none shown"):
        try:
            obj = canonical.loads(entities.entity_class(item_kind), body)
        except MimError as exc:
            fail(f"{where}: {exc.reason}")
        if isinstance(obj, entities.Address):
            fail(f"{where}: an address has no fingerprint")
        fingerprints.append(obj.fingerprint)
    for value in fingerprints:
        click.echo(value)

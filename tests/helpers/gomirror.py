"""Go's own encoding/json as a judge: the program in ``tests/mim/go/mirror.go``, built with the Go
toolchain found on the machine, and the comparison of its answers with ``mim``'s."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from mim import canonical, entities
from mim.errors import MimError

SOURCE: Final = Path(__file__).resolve().parents[1] / "mim" / "go" / "mirror.go"
#: What to say where there is no Go to build the program with.
NO_GO: Final = (
    "Go is not installed (Debian: apt-get install golang-go), so the decoder is not compared"
    " with encoding/json"
)
#: The kinds the program decodes: the seven object kinds and the page envelope.
KINDS: Final = (*entities.KINDS, "page")


def build(directory: Path) -> Path | None:
    """The mirror program built into ``directory``, or ``None`` where no ``go`` is on the path."""
    go = shutil.which("go")
    if go is None:
        return None
    binary = directory / "mirror"
    environment = {
        **os.environ,
        "GOCACHE": str(directory / "cache"),
        "GOPATH": str(directory / "gopath"),
        "GOFLAGS": "",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
    }
    subprocess.run(
        [go, "build", "-o", str(binary), SOURCE.name],
        cwd=SOURCE.parent,
        env=environment,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return binary


class Mirror:
    """The running mirror program: one request line in, one answer line out."""

    def __init__(self, binary: Path) -> None:
        self._process = subprocess.Popen(
            [str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._in: IO[str] = self._process.stdin
        self._out: IO[str] = self._process.stdout

    def decode(self, kind: str, raw: bytes) -> bytes | None:
        """``json.Marshal`` of what Go's ``json.Unmarshal`` makes of ``raw``; ``None`` for an
        error."""
        self._in.write(f"{kind} {base64.b64encode(raw).decode()}\n")
        self._in.flush()
        tag, _, rest = self._out.readline().rstrip("\n").partition(" ")
        if tag == "ok":
            return base64.b64decode(rest)
        if tag == "error":
            return None
        raise RuntimeError(f"the mirror program failed: {tag} {rest}")

    def close(self) -> None:
        self._in.close()
        self._process.wait(timeout=10)
        self._out.close()


def mim_decode(kind: str, raw: bytes) -> bytes | None:
    """What ``mim`` re-encodes after decoding ``raw``; ``None`` for a ``MimError``. Any other
    exception propagates: the decoder must never raise one."""
    cls = entities.ApiResponse if kind == "page" else entities.entity_class(kind)
    try:
        return canonical.encode(canonical.loads(cls, raw))
    except MimError:
        return None


@dataclass(frozen=True, slots=True)
class Disagreement:
    """One input on which ``mim`` and Go decide differently."""

    kind: str
    raw: bytes
    ours: bytes | None
    go: bytes | None

    def __str__(self) -> str:
        def show(answer: bytes | None) -> str:
            return "error" if answer is None else answer[:400].decode(errors="replace")

        return (
            f"{self.kind} ({len(self.raw)} bytes) {self.raw[:400]!r}\n"
            f"  mim: {show(self.ours)}\n  go:  {show(self.go)}"
        )


def disagreement(mirror: Mirror, kind: str, raw: bytes) -> Disagreement | None:
    """``None`` if ``mim`` and Go agree on ``raw`` (the same bytes again, or both an error)."""
    ours, go = mim_decode(kind, raw), mirror.decode(kind, raw)
    return None if ours == go else Disagreement(kind, raw, ours, go)

"""Checks on the docs: generated parts match the code, and pages whose commands run as written
(their ``sh`` blocks and what each prints)."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from relay.settings import TABLE_BEGIN, TABLE_END, config_table, discover, replace_config_table

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def has_config_table(path: Path = README) -> bool:
    text = path.read_text(encoding="utf-8")
    return TABLE_BEGIN in text and TABLE_END in text


def config_table_diff(path: Path = README) -> str:
    """A unified diff from the file's configuration table to the generated one ("" if equal)."""
    current = path.read_text(encoding="utf-8")
    wanted = replace_config_table(current, config_table(discover()))
    return "".join(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            fromfile=f"{path.name} (committed)",
            tofile=f"{path.name} (generated)",
        )
    )


def assert_config_table_current(path: Path = README) -> None:
    """Fail with the diff and the command to fix it if the table drifted from the settings."""
    diff = config_table_diff(path)
    assert not diff, (
        f"the configuration table in {path.name} is out of date; "
        f"run `python -m relay.settings {path.name}`:\n{diff}"
    )


# --- runnable docs ----------------------------------------------------------------------------

#: Stands for any text in an expected output line; alone on a line, for any lines.
ANY: Final = "…"
_FENCE: Final = re.compile(r"^```(\S*)(?:[ \t]+(\S+))?[ \t]*$")


@dataclass(frozen=True, slots=True)
class Step:
    """One ``sh`` block of a page: its code, how it runs, what it prints, where it is."""

    code: str
    mode: str  # "" (in the session), "background" (a terminal of its own), "repeat"
    expected: str  # the ``text`` block after it; "" if none (it prints nothing)
    line: int


def steps(path: Path) -> list[Step]:
    """The ``sh`` blocks of the Markdown page ``path``, each with the ``text`` block after it."""
    blocks: list[tuple[str, str, str, int]] = []  # language, mode, body, line
    current: tuple[str, str, list[str], int] | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        fence = _FENCE.match(line)
        if current is None and fence:
            current = (fence.group(1), fence.group(2) or "", [], number)
        elif current is not None and line == "```":
            blocks.append((current[0], current[1], "\n".join(current[2]) + "\n", current[3]))
            current = None
        elif current is not None:
            current[2].append(line)
    found: list[Step] = []
    for n, (language, mode, code, start) in enumerate(blocks):
        if language != "sh":
            continue
        after = blocks[n + 1] if n + 1 < len(blocks) else None
        expected = after[2] if after is not None and after[0] == "text" else ""
        found.append(Step(code, mode, expected, start))
    return found


def _pattern(line: str) -> str:
    return "[^\n]*?".join(re.escape(part) for part in line.split(ANY))


def prints(expected: str, actual: str) -> bool:
    """Whether ``actual`` is, line for line, what ``expected`` shows (``…`` for any text)."""
    wanted = expected.splitlines()
    parts = ["(?:[^\n]*\n)*?" if line == ANY else _pattern(line.rstrip()) + "\n" for line in wanted]
    got = "".join(line.rstrip() + "\n" for line in actual.splitlines())
    return re.fullmatch("".join(parts), got) is not None


def shows(expected: str, actual: str) -> bool:
    """Whether the lines ``expected`` shows appear in ``actual`` in order, among other lines."""
    got = iter(actual.splitlines())
    for line in expected.splitlines():
        if line != ANY and not any(re.fullmatch(_pattern(line.rstrip()), g.rstrip()) for g in got):
            return False
    return True

"""Checks that generated parts of the docs match the code."""

from __future__ import annotations

import difflib
from pathlib import Path

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

"""The README's configuration table is generated from the settings classes and kept in sync."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.settings import TABLE_BEGIN, TABLE_END
from tests.helpers.docs import README, assert_config_table_current, has_config_table


def test_readme_table_matches_settings() -> None:
    """Every variable in the README table is a real setting with its real default, and back."""
    if not has_config_table(README):
        pytest.skip(f"README.md has no {TABLE_BEGIN} ... {TABLE_END} section yet")
    assert_config_table_current(README)


def test_drift_is_reported_with_the_fix(tmp_path: Path) -> None:
    """A stale table fails with a diff naming the command that regenerates it."""
    stale = tmp_path / "README.md"
    stale.write_text(f"# x\n\n{TABLE_BEGIN}\n| stale |\n{TABLE_END}\n", encoding="utf-8")
    with pytest.raises(AssertionError, match=r"python -m relay\.settings README\.md") as caught:
        assert_config_table_current(stale)
    assert "+| `MIM_NATS_URL` |" in str(caught.value)

"""relay.settings: node-wide and per-service variables, errors naming the variable, the table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from relay import SettingsError
from relay.settings import (
    TABLE_BEGIN,
    TABLE_END,
    NodeSettings,
    ServiceSettings,
    config_table,
    discover,
    env_name,
    load,
    redact_url,
    replace_config_table,
)


class ExampleSettings(ServiceSettings):
    """How a service declares its settings: its own prefix, its own fields."""

    model_config = SettingsConfigDict(env_prefix="MIM_EXAMPLE_")

    metrics_port: int = Field(default=9199, ge=0, le=65535, description="Port of /metrics.")
    max_inflight: int = Field(default=64, ge=1, description="Messages handled at once.")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MIM_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    """With no variables set every field has its documented default."""
    settings = load(NodeSettings)
    assert settings.nats_url == "nats://127.0.0.1:4222"
    assert settings.database_url == "postgresql://mimrelay@127.0.0.1:5432/mimrelay"
    assert settings.log_format == "auto"
    assert settings.log_level == "info"
    assert settings.stream_prefix == "MIM"
    assert settings.data_dir == Path("./data")


def test_every_field_has_a_description() -> None:
    """Each setting carries the one-line description the README table shows."""
    for cls in (NodeSettings, ServiceSettings, ExampleSettings):
        for name, info in cls.model_fields.items():
            assert info.description, f"{cls.__name__}.{name} has no description"
            assert "\n" not in info.description


def test_node_wide_names_are_shared_and_service_fields_take_the_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A service reads MIM_NATS_URL like every other, and MIM_EXAMPLE_* for its own fields."""
    monkeypatch.setenv("MIM_NATS_URL", "nats://nats.example:4222")
    monkeypatch.setenv("MIM_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("MIM_EXAMPLE_MAX_INFLIGHT", "5")
    monkeypatch.setenv("MIM_EXAMPLE_SHUTDOWN_GRACE_SECONDS", "2.5")
    monkeypatch.setenv("MIM_METRICS_PORT", "1")  # another service's name, not ours
    settings = load(ExampleSettings)
    assert settings.nats_url == "nats://nats.example:4222"
    assert settings.log_level == "debug"
    assert settings.max_inflight == 5
    assert settings.shutdown_grace_seconds == 2.5
    assert settings.metrics_port == 9199
    assert env_name(ExampleSettings, "metrics_port") == "MIM_EXAMPLE_METRICS_PORT"
    assert env_name(ExampleSettings, "nats_url") == "MIM_NATS_URL"


def test_settings_are_frozen() -> None:
    """Settings are read once and passed down; nobody changes them on the way."""
    settings = load(NodeSettings)
    with pytest.raises(ValueError, match="frozen"):
        settings.nats_url = "nats://elsewhere:4222"


def test_empty_variable_means_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty variable (compose's `${VAR}` when unset) falls back to the default."""
    monkeypatch.setenv("MIM_LOG_FORMAT", "")
    assert load(NodeSettings).log_format == "auto"


def test_bad_integer_names_variable_value_and_type(monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-number in a per-service port stops loading with the variable, value and type."""
    monkeypatch.setenv("MIM_EXAMPLE_METRICS_PORT", "ninety")
    with pytest.raises(SettingsError) as caught:
        load(ExampleSettings)
    message = str(caught.value)
    assert "MIM_EXAMPLE_METRICS_PORT" in message
    assert "'ninety'" in message
    assert "an integer" in message
    assert caught.value.problems == [
        (
            "MIM_EXAMPLE_METRICS_PORT",
            "'ninety'",
            "an integer (input should be a valid integer, unable to parse string as an integer)",
        )
    ]


def test_bad_choice_and_range_are_all_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every bad variable is named at once, choices listed, bounds stated."""
    monkeypatch.setenv("MIM_LOG_FORMAT", "xml")
    monkeypatch.setenv("MIM_EXAMPLE_MAX_INFLIGHT", "0")
    with pytest.raises(SettingsError) as caught:
        load(ExampleSettings)
    variables = [p[0] for p in caught.value.problems]
    assert variables == ["MIM_LOG_FORMAT", "MIM_EXAMPLE_MAX_INFLIGHT"]
    message = str(caught.value)
    assert "one of 'json', 'console', 'auto'" in message
    assert "greater than or equal to 1" in message


def test_bad_prefix_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream prefix that would break subject names is refused at start-up."""
    monkeypatch.setenv("MIM_STREAM_PREFIX", "my.node")
    with pytest.raises(SettingsError, match="MIM_STREAM_PREFIX"):
        load(NodeSettings)


def test_password_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rejected URL is shown without its password."""
    monkeypatch.setenv("MIM_CONNECT_ATTEMPTS", "postgresql://u:secret@h/db")
    with pytest.raises(SettingsError) as caught:
        load(NodeSettings)
    assert "secret" not in str(caught.value)
    assert redact_url("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("nats://h:4222") == "nats://h:4222"


def test_config_table_lists_each_variable_once() -> None:
    """The table has one row per variable with default and description, node-wide ones first."""
    table = config_table([NodeSettings, ExampleSettings])
    lines = table.splitlines()
    assert lines[0] == "| Variable | Default | Description |"
    assert lines[2] == (
        "| `MIM_NATS_URL` | `nats://127.0.0.1:4222` | NATS server URL (with JetStream enabled);"
        " the servers of a cluster comma-separated. |"
    )
    assert "| `MIM_DATA_DIR` | `./data` |" in table
    assert "| `MIM_EXAMPLE_METRICS_PORT` | `9199` | Port of /metrics. |" in table
    assert "| `MIM_EXAMPLE_SHUTDOWN_GRACE_SECONDS` | `10` |" in table
    assert table.count("`MIM_NATS_URL`") == 1
    assert len(lines) == 2 + len(NodeSettings.model_fields) + 3  # port, grace, max_inflight


def test_replace_config_table_keeps_the_rest() -> None:
    """Regenerating rewrites only the part between the markers."""
    text = f"# Title\n\n{TABLE_BEGIN}\nold\n{TABLE_END}\n\nAfter.\n"
    new = replace_config_table(text, "| a |\n")
    assert new == f"# Title\n\n{TABLE_BEGIN}\n\n| a |\n\n{TABLE_END}\n\nAfter.\n"
    assert replace_config_table(new, "| a |\n") == new
    with pytest.raises(ValueError, match="markers"):
        replace_config_table("no markers", "| a |\n")


def test_discover_starts_with_node_settings() -> None:
    """Discovery yields NodeSettings first, then the services' classes."""
    classes = discover()
    assert classes[0] is NodeSettings
    assert all(issubclass(c, NodeSettings) for c in classes)

"""What the deploy tests compare the manifests against: the code's entry points, settings, metrics.

Everything here is read from the code itself (settings classes, metrics modules), never listed by
hand, so a manifest that drifts from the code fails its test.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, cast

import pytest
from prometheus_client import PROCESS_COLLECTOR
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from pydantic_settings import BaseSettings

from relay.node import NodeSupervisorSettings
from relay.settings import NodeSettings, discover, env_name
from tests.helpers.procs import REPO

yaml = pytest.importorskip(
    "yaml", reason="PyYAML is needed to parse the deploy manifests (pip install pyyaml)"
)

DEPLOY = REPO / "deploy"

# Exporters' metrics the rules and dashboards may use besides our own (docker-compose.yml runs
# these exporters; `up` is Prometheus' own).
STANDARD_METRICS = frozenset(
    {
        "up",
        "node_filesystem_avail_bytes",
        "node_filesystem_size_bytes",
        "pg_database_size_bytes",
    }
)

_PROMQL_WORDS = frozenset(
    {"by", "without", "and", "or", "unless", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan"}
)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def go_size(text: str) -> int:
    """A size as Go's ``GOMEMLIMIT`` reads it: digits and one of B, KiB, MiB, GiB, TiB."""
    found = re.fullmatch(r"(\d+)(B|KiB|MiB|GiB|TiB)", text)
    assert found is not None, text
    return int(str(found[1])) << 10 * ["B", "KiB", "MiB", "GiB", "TiB"].index(str(found[2]))


def settings_class(module: str) -> type[BaseSettings]:
    """The settings class of the service that ``python -m <module>`` runs."""
    service = module.rsplit(".", 1)[-1]
    classes = [cls for cls in discover() if cls.__module__ == f"services.{service}.settings"]
    assert len(classes) == 1, f"no single settings class for {module}: {classes}"
    return classes[0]


def env_names(cls: type[BaseSettings]) -> set[str]:
    """Every environment variable ``cls`` reads."""
    return {env_name(cls, field) for field in cls.model_fields}


def node_env_names() -> set[str]:
    return env_names(NodeSettings) | env_names(NodeSupervisorSettings)


def runnable(module: str) -> bool:
    """True if ``python -m <module>`` finds something to run."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return False
    if spec is None:
        return False
    if spec.submodule_search_locations is not None:  # a package: needs __main__
        return importlib.util.find_spec(f"{module}.__main__") is not None
    return "__main__" in Path(str(spec.origin)).read_text(encoding="utf-8")


class _Described(Protocol):
    def describe(self) -> Iterable[Metric]: ...


def _sample_names(collector: _Described) -> set[str]:
    names: set[str] = set()
    for family in collector.describe():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("_sum", "_count", ""),
            "info": ("_info",),
        }.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
    return names


def exported_metrics() -> set[str]:
    """Every sample name a service exports: each ``services/*/metrics.py``, relay.metrics, and
    the process collector of the default registry that every service serves (``process_*``)."""
    names = {s.name for family in PROCESS_COLLECTOR.collect() for s in family.samples}
    modules = ["relay.metrics"]
    modules += [
        f"services.{path.parent.name}.metrics"
        for path in sorted((REPO / "services").glob("*/metrics.py"))
    ]
    for name in modules:
        module = importlib.import_module(name)
        for value in vars(module).values():
            # the client's metrics, and collectors of our own that describe their families
            described = not isinstance(value, type) and callable(getattr(value, "describe", None))
            if isinstance(value, MetricWrapperBase) or described:
                names |= _sample_names(cast(_Described, value))
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", text)  # grouping labels
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)\s*(\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _PROMQL_WORDS:
            continue
        names.add(word)
    return names

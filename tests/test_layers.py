"""The dependency rules between the packages, read from the imports themselves."""

from __future__ import annotations

import ast
from pathlib import Path

from service.runner import ChannelState
from telemetry.metrics import CHANNEL_STATES

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def offenders(
    folder: str, forbidden: str, *, allowed: frozenset[str] = frozenset()
) -> dict[str, list[str]]:
    found = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name in allowed or name.startswith(f"{forbidden.replace('.', '/')}/"):
            continue
        bad = {m for m in imported_modules(path) if m == forbidden or m.startswith(f"{forbidden}.")}
        if bad:
            found[name] = sorted(bad)
    return found


def test_telemetry_imports_nothing_from_the_service() -> None:
    assert offenders("telemetry", "service") == {}


def test_only_the_app_factory_imports_the_routes() -> None:
    assert offenders("service", "service.api", allowed=frozenset({"service/app.py"})) == {}


def test_the_state_series_are_the_channel_states() -> None:
    assert tuple(state.value for state in ChannelState) == CHANNEL_STATES

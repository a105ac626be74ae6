"""The service's shape, held by a test: sizes and the dependency rules of docs/architecture.md.

Every module of ``collector/``, ``fieldtools/`` and ``detectors/`` is parsed (never
imported) with ``ast``. A module over ``MAX_MODULE_LINES``, a class over
``MAX_CLASS_LINES`` or the composition root over ``MAX_ROOT_LINES`` fails, named; so does
an import that crosses a boundary the architecture draws.

Two kinds of import rule: "never imports" counts every import statement of the module,
at its top or inside a function; "reaches" follows what importing the module executes
(the imports at module level, and the packages they live in) to every module it loads.
"""

from __future__ import annotations

import ast
from collections import deque
from functools import cache
from pathlib import Path

import pytest

from collector.alerts.model import COLOURS as ALERT_COLOURS
from detectors.levels import COLOURS as DETECTOR_COLOURS

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("collector", "fieldtools", "detectors")
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300
MAX_ROOT_LINES = 250
COMPOSITION_ROOT = "collector.app"

# The detection part: the engine and its runtime, the rule runners, what they decide
# (collector/detection*.py ...) and every detector. Operator alerts are detections too.
DETECTION = (
    "collector.detection",
    "collector.detecting",
    "collector.detectionevent",
    "collector.rulerunner",
    "collector.rules",
    "collector.silencecheck",
    "collector.warmstart",
    "collector.operator",
    "detectors",
)
# What runs inside the alert store's transaction (the routing callback and the receiver
# formats it encodes with) must be pure data: nothing there may do I/O.
INSIDE_THE_TRANSACTION = (
    "collector.alerts.notify",
    "collector.alerts.formats",
    "collector.alerts.ledger",
    "collector.alerts.flapping",
    "collector.alerts.incidents",
)
IO_MODULES = (
    "asyncio",
    "httpx",
    "socket",
    "ssl",
    "sqlite3",
    "subprocess",
    "urllib.request",
    "http.client",
    "requests",
    "paho",
)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).with_suffix("")
            parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
            found[".".join(parts)] = path
    return found


MODULES = _modules()


@cache
def _tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(encoding="utf-8"), filename=str(MODULES[name]))


def _imported(name: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The modules an import statement names (absolute), submodules included."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = node.module or ""
    if node.level:
        package = name.split(".")
        if MODULES[name].name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, base] if base else package)
    return {base} | {f"{base}.{alias.name}" for alias in node.names}


def imports(name: str) -> set[str]:
    """Every module a module's import statements name, wherever they stand."""
    found: set[str] = set()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            found |= _imported(name, node)
    return found


def _loaded_on_import(name: str) -> set[str]:
    """The imports that importing the module runs: module level, under ``if``/``try``
    too, but not inside functions (``TYPE_CHECKING`` blocks never run)."""
    found: set[str] = set()
    todo: list[ast.stmt] = list(_tree(name).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found |= _imported(name, node)
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                todo += node.body
            todo += node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody
            for handler in node.handlers:
                todo += handler.body
    return found


def reach(name: str) -> dict[str, list[str]]:
    """Every module of ours that importing ``name`` loads, with the chain that loads it."""
    chains: dict[str, list[str]] = {name: [name]}
    queue = deque([name])
    while queue:
        current = queue.popleft()
        parts = current.split(".")
        parents = [".".join(parts[:i]) for i in range(1, len(parts))]
        for found in [*parents, *sorted(_loaded_on_import(current))]:
            if found in MODULES and found not in chains:
                chains[found] = [*chains[current], found]
                queue.append(found)
    return chains


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


# -- sizes -----------------------------------------------------------------------------------


def _lines(name: str) -> int:
    return len(MODULES[name].read_text(encoding="utf-8").splitlines())


def test_no_module_is_over_its_size() -> None:
    over = {name: _lines(name) for name in MODULES if _lines(name) > MAX_MODULE_LINES}
    assert not over, f"modules over {MAX_MODULE_LINES} lines: {over}"


def test_no_class_is_over_its_size() -> None:
    over = {}
    for name in MODULES:
        for node in ast.walk(_tree(name)):
            if isinstance(node, ast.ClassDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    over[f"{name}.{node.name}"] = lines
    assert not over, f"classes over {MAX_CLASS_LINES} lines: {over}"


def test_the_composition_root_stays_small() -> None:
    lines = _lines(COMPOSITION_ROOT)
    assert lines <= MAX_ROOT_LINES, f"{COMPOSITION_ROOT}: {lines} lines, at most {MAX_ROOT_LINES}"


# -- dependency rules --------------------------------------------------------------------------


def test_the_checks_see_the_service() -> None:
    """A test that parsed nothing, or missed an import, would pass whatever the code."""
    assert {"collector.app", "collector.alerts.dispatch", "detectors.base"} <= MODULES.keys()
    assert "collector.alerts.lifecycle" in imports("collector.alerts.dispatch")
    assert "collector.alerts.model" in reach("collector.alerts.dispatch")


@pytest.mark.parametrize("package", ["detectors"])
def test_the_detectors_never_import_the_collector(package: str) -> None:
    crossing = {
        name: sorted(m for m in imports(name) if _within(m, ("collector", "fieldtools")))
        for name in MODULES
        if _within(name, (package,))
    }
    assert not {k: v for k, v in crossing.items() if v}


def test_the_alerts_never_import_detection_or_the_root() -> None:
    forbidden = ("collector.detection", "collector.detecting", COMPOSITION_ROOT)
    crossing = {
        name: sorted(m for m in imports(name) if m in forbidden)
        for name in MODULES
        if _within(name, ("collector.alerts",))
    }
    assert not {k: v for k, v in crossing.items() if v}


def test_the_alerts_reach_nothing_of_detection() -> None:
    """Delivery and the alert book work without the detection part loaded: an alert
    from the API, or one waiting in the outbox, needs no detector to reach a person."""
    for start in ("collector.alerts.dispatch", "collector.alerts.lifecycle"):
        reached = reach(start)
        crossing = [reached[m] for m in sorted(reached) if _within(m, DETECTION)]
        assert not crossing, f"{start} loads detection: " + "; ".join(
            " -> ".join(chain) for chain in crossing
        )


def test_the_alert_colours_are_the_detectors_colours() -> None:
    """The alerts keep the five-colour scale of their own, so as not to load the
    detectors for it; both must name the same colours in the same order."""
    assert ALERT_COLOURS == DETECTOR_COLOURS


def test_what_runs_inside_the_store_transaction_does_no_io() -> None:
    for start in INSIDE_THE_TRANSACTION:
        reached = reach(start)
        doing_io = {
            " -> ".join(chain): sorted(m for m in imports(chain[-1]) if _within(m, IO_MODULES))
            for chain in reached.values()
        }
        assert not {k: v for k, v in doing_io.items() if v}, f"{start} reaches I/O"


def test_the_service_never_imports_the_field_tools() -> None:
    """The command (collector/cli.py) loads them inside the command that runs them."""
    crossing = {
        name: sorted(m for m in _loaded_on_import(name) if _within(m, ("fieldtools",)))
        for name in MODULES
        if not _within(name, ("fieldtools",))
    }
    assert not {k: v for k, v in crossing.items() if v}

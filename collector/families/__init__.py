"""The device families: one plug-in module per family, and the one list of them.

Every place that needs the families (topic validation, the registry and settings
validators, decoding, the fast path, warm start, the device list, the simulator, the
schemas and dashboards) reads ``FAMILIES`` here. Adding a family is a new module
defining ``FAMILY`` (see ``collector/families/base.py``) and its name in ``_PLUGINS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType

from collector.families.base import Family

# Module names, in the order families are listed (topics, dashboards, docs).
_PLUGINS = ("camera", "parking", "chem", "fire")


def _load() -> Mapping[str, Family]:
    found: dict[str, Family] = {}
    for module_name in _PLUGINS:
        plugin = importlib.import_module(f"{__name__}.{module_name}").FAMILY
        if not isinstance(plugin, Family) or plugin.name != module_name:
            raise TypeError(
                f"collector/families/{module_name}.py must define "
                f"FAMILY = Family(name={module_name!r}, ...)"
            )
        found[plugin.name] = plugin
    return MappingProxyType(found)


PLUGINS: Mapping[str, Family] = _load()
FAMILIES: tuple[str, ...] = tuple(PLUGINS)


def known_family(name: str) -> str:
    """``name`` if it is a family, else a ValueError naming the families (a validator)."""
    if name not in PLUGINS:
        raise ValueError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
    return name

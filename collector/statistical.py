"""The statistical chains the collector runs: one per device family.

A family's series go through ``auto`` with the family's own defaults (its plug-in's
``detection``: a chem process value and a city crowd count are different signals), then
the site's ``statistical_params`` and ``statistical_family_params`` over them. Without a
family (``smartunit backtest`` of a CSV, NAB) the chain is ``auto``'s plain defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from collector.families import PLUGINS
from detectors.chain import Chain, GroupedChains


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override``'s keys; tables (``sequence = { ... }``) merged key by key."""
    out = dict(base)
    for key, value in override.items():
        below = out.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            out[key] = merged(below, value)
        else:
            out[key] = value
    return out


# One rarity in two units: per reading, or in device time. Whoever sets one of them
# (the site over the family, a family's site params over both) replaces the other.
RARITY = ("p_alert", "alert_every_s")


def _over(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``merged``, where a rarity in the override replaces the base's in either unit."""
    if any(key in override for key in RARITY):
        base = {key: value for key, value in base.items() if key not in RARITY}
    return merged(base, override)


def chain_params(
    family: str,
    statistical: str,
    params: Mapping[str, Any],
    family_params: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """The parameters of the statistical chain for one family's series: the family's own
    defaults for ``auto`` (its plug-in's ``detection``), then ``statistical_params``, then
    ``statistical_family_params`` for that family (a rarity set per reading or in
    device time replaces the one below it in either unit)."""
    own = PLUGINS[family].detection if statistical == "auto" else {}
    return _over(_over(own, params), family_params.get(family, {}))


def statistical_chains(
    statistical: str | None,
    params: Mapping[str, Any],
    family_params: Mapping[str, Mapping[str, Any]],
) -> GroupedChains | None:
    """One statistical chain per family (``chain_params``); None without a detector."""
    if not statistical:
        return None
    return GroupedChains(
        {
            family: Chain.from_config(
                statistical, **chain_params(family, statistical, params, family_params)
            )
            for family in PLUGINS
        }
    )

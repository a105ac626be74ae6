"""Devices seen in InfluxDB but missing from the registry (``smartunit devices --unregistered``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from collector import queries
from collector.config import InfluxSettings
from collector.influx import query_sync
from collector.registry import FAMILIES, UNREGISTERED_UNIT, Registry


@dataclass(frozen=True)
class UnregisteredDevice:
    device: str
    family: str
    last_seen: str  # RFC 3339, UTC
    readings: int


def unregistered_devices(settings: InfluxSettings, registry: Registry) -> list[UnregisteredDevice]:
    """Devices with readings stored under ``_unregistered`` that the registry still lacks.

    A device registered since keeps its old points under ``_unregistered``; it is not
    listed any more, because the registry now places its new readings.
    """
    found: list[UnregisteredDevice] = []
    for family in FAMILIES:
        # count(*) counts each field; the largest of them is the number of readings
        # (exact when every reading carries the family's main field).
        series = query_sync(settings, queries.unregistered_counts(family, UNREGISTERED_UNIT))
        lasts = {
            s["tags"]["device"]: s["values"][0][0]
            for s in query_sync(settings, queries.unregistered_last_seen(family, UNREGISTERED_UNIT))
        }
        for item in series:
            device = item["tags"]["device"]
            if device in registry.devices:
                continue
            counts = [v for v in item["values"][0][1:] if isinstance(v, int)]
            last_ms = lasts.get(device)
            last_seen = (
                datetime.fromtimestamp(last_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
                if last_ms is not None
                else "?"
            )
            found.append(UnregisteredDevice(device, family, last_seen, max(counts, default=0)))
    return sorted(found, key=lambda d: (d.family, d.device))

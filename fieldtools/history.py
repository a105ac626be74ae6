"""Stored history for a fresh demo: the readings a deployment's InfluxDB holds when its
collector starts, so that the collector's warm start has a day to learn from.

The readings are the simulated devices' own (``SimDevice.history``), taken through the
collector's decoder and line encoder, so they are stored exactly as ingest stores them.
"""

from __future__ import annotations

import time

import orjson

from collector.config import InfluxSettings
from collector.errors import ServiceStartError
from collector.influx import InfluxClient
from collector.protocol import Decoder, Rejection, reading_line
from collector.registry import FAMILIES, Registry
from fieldtools.simulator import SimDevice

READINGS_PER_MESSAGE = 500  # under the decoder's default max_objects_per_message
LINES_PER_WRITE = 5000


def history_lines(
    fleet: list[SimDevice], registry: Registry, *, hours: float, now: float
) -> list[str]:
    """Line protocol for ``hours`` of the fleet's readings up to ``now``."""
    decoder = Decoder()
    received_ms = round(now * 1000)
    lines: list[str] = []
    for device in fleet:
        readings = device.history(now - hours * 3600, now)
        for first in range(0, len(readings), READINGS_PER_MESSAGE):
            payload = orjson.dumps(readings[first : first + READINGS_PER_MESSAGE])
            decoded = decoder.decode(device.data_topic, payload, received_ms, registry)
            # the simulator's own readings: a refusal is a defect, not data to skip
            if isinstance(decoded, Rejection):
                raise ServiceStartError(f"history of {device.id} refused: {decoded.detail}")
            if decoded.rejections:
                detail = decoded.rejections[0].detail
                raise ServiceStartError(f"history of {device.id} refused: {detail}")
            lines += [reading_line(reading, registry) for reading in decoded.readings]
    return lines


async def store_history(
    influx: InfluxSettings, fleet: list[SimDevice], registry: Registry, *, hours: float
) -> int:
    """Writes the history into ``influx`` (creating its database), unless it holds readings
    already (a demo's kept data): the readings stored."""
    async with InfluxClient(influx) as client:
        await client.ensure_database()
        if await client.query(f"SHOW MEASUREMENTS WITH MEASUREMENT =~ /^({'|'.join(FAMILIES)})$/"):
            return 0
        lines = history_lines(fleet, registry, hours=hours, now=time.time())
        for first in range(0, len(lines), LINES_PER_WRITE):
            result = await client.write_lines(lines[first : first + LINES_PER_WRITE])
            if result.dropped:
                raise ServiceStartError(f"InfluxDB refused history lines: {dict(result.dropped)}")
    return len(lines)

"""Reading history for the warm start, in bounded pieces and within a budget.

Detectors without saved state first learn from stored readings. That read must never be
what takes the database down: a ``SELECT *`` per family over hours of data asks for
every field key of the measurement at once (once 128,000 of them, made up by one device,
and InfluxDB grew to 24 GB answering). So history is read

- per family, only numeric field keys that can be series (``SHOW FIELD KEYS``), known
  quantities first, at most ``MAX_FIELDS_PER_FAMILY`` of them, ``FIELDS_PER_QUERY`` per
  query;
- per hour of history, in pages of at most ``page_points`` values (``LIMIT`` rows times
  the fields asked for), the next page starting where the last one ended (its time, and
  how many rows of that time it already had);
- within ``max_points`` values in all: each page asks for no more than what is left,
  so the database is never asked for more than the budget. Of a window holding more,
  the most recent hours that fit are read (the database counts the values per hour
  first, an aggregate per field and hour), and the log says so.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from collector import queries
from collector.admission import NOT_QUANTITIES, PROTOCOL_QUANTITIES
from collector.influx import InfluxClient, rows
from collector.protocol import Reading
from collector.registry import FAMILIES, HIERARCHY_LEVELS

log = logging.getLogger(__name__)

CHUNK_MS = 3_600_000
MAX_FIELDS_PER_FAMILY = 1000
FIELDS_PER_QUERY = 50
NOT_FIELDS = frozenset({"time", "device", "unit", *HIERARCHY_LEVELS}) | NOT_QUANTITIES
NUMERIC = frozenset({"float", "integer"})


@dataclass
class HistoryReader:
    influx: InfluxClient
    max_points: int  # values (rows x fields asked for) in all
    page_points: int = 50_000  # values per query
    known: frozenset[str] = frozenset()  # quantities read first when there are too many
    # rows that came back times the fields asked for: each query asks for no more than
    # max_points minus this, so this never exceeds max_points
    spent: int = 0
    returned: int = 0  # values that came back
    exhausted: bool = False  # the budget left is less than one row

    async def fields(self, family: str) -> list[str]:
        """The numeric field keys of a family worth reading, known quantities first."""
        found = await self.influx.query(queries.field_keys(family))
        names = [
            str(row["fieldKey"])
            for item in found
            for row in rows(item)
            if row.get("fieldType") in NUMERIC and row.get("fieldKey") not in NOT_FIELDS
        ]
        first = PROTOCOL_QUANTITIES | self.known
        names.sort(key=lambda name: (name not in first, name))
        if len(names) > MAX_FIELDS_PER_FAMILY:
            log.warning(
                "warm start reads only some field keys of a family",
                extra={"family": family, "field_keys": len(names), "read": MAX_FIELDS_PER_FAMILY},
            )
        return names[:MAX_FIELDS_PER_FAMILY]

    async def pages(self, start_ms: int, end_ms: int) -> AsyncIterator[list[Reading]]:
        """Readings between two times, a page at a time; each series in time order. Of a
        window holding more values than the budget, the most recent part that fits."""
        fields = {family: await self.fields(family) for family in FAMILIES}
        start_ms = await self._recent_start(fields, start_ms, end_ms)
        for chunk_start in range(start_ms, end_ms, CHUNK_MS):
            chunk_end = min(chunk_start + CHUNK_MS, end_ms)
            for family, names in fields.items():
                for first in range(0, len(names), FIELDS_PER_QUERY):
                    group = names[first : first + FIELDS_PER_QUERY]
                    async for page in self._chunk(family, group, chunk_start, chunk_end):
                        yield page
                    if self.exhausted:
                        return

    async def _recent_start(self, fields: dict[str, list[str]], start_ms: int, end_ms: int) -> int:
        """Where to start so that the hours read fit the budget, the newest kept: counted
        by the database per hour (one number per field and hour comes back)."""
        per_hour: Counter[int] = Counter()
        for family, names in fields.items():
            for first in range(0, len(names), FIELDS_PER_QUERY):
                group = names[first : first + FIELDS_PER_QUERY]
                found = await self.influx.query(
                    queries.hourly_counts(family, group, start_ms, end_ms)
                )
                for row in (row for item in found for row in rows(item)):
                    per_hour[int(row["time"])] += sum(
                        value for key, value in row.items() if key != "time" and value
                    )
        total, newer = 0, None
        for hour in sorted((hour for hour, n in per_hour.items() if n), reverse=True):
            total += per_hour[hour]
            if total > self.max_points:
                chosen = hour if newer is None else newer  # at least the newest hour, cut
                if chosen > start_ms:
                    log.warning(
                        "warm start: the window holds more than its budget; the newest part read",
                        extra={"values": sum(per_hour.values()), "from_ms": chosen},
                    )
                return max(start_ms, chosen)
            newer = hour
        return start_ms

    async def _chunk(
        self, family: str, names: list[str], start_ms: int, end_ms: int
    ) -> AsyncIterator[list[Reading]]:
        cursor, skip = start_ms, 0  # the next page: from this time, past this many rows
        while True:
            limit = min(self.page_points, self.max_points - self.spent) // len(names)
            if limit < 1:
                self.exhausted = True
                return
            found = await self.influx.query(
                queries.readings_page(family, names, cursor, end_ms, limit=limit, offset=skip)
            )
            page = [row for item in found for row in rows(item)]
            self.spent += len(page) * len(names)
            readings = list(_readings(family, page))
            self.returned += sum(len(r.fields) for r in readings)
            if readings:
                yield readings
            if len(page) < limit:
                return
            last = int(page[-1]["time"])
            at_last = sum(1 for row in page if int(row["time"]) == last)
            skip = skip + at_last if last == cursor else at_last
            cursor = last


def _readings(family: str, page: Iterable[dict[str, Any]]) -> Iterable[Reading]:
    for row in page:
        device = row.get("device")
        fields = {
            key: value
            for key, value in row.items()
            if key not in NOT_FIELDS
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        }
        if fields and isinstance(device, str):
            yield Reading(family, device, int(row["time"]), fields)

"""Every InfluxQL statement the service reads with, built in one place.

Identifiers and string literals are quoted here (``quote_ident`` / ``quote_literal``),
never by callers: a device id or a field key from the field cannot change a query.
Times are integer epoch milliseconds.

- ``series_means``: a chart of one quantity of one device (the HTTP API), ~600 points.
- ``field_keys``, ``hourly_counts``, ``readings_page``: the detectors' warm start
  (collector/warmstart.py), which budgets what it reads.
- ``unregistered_counts``, ``unregistered_last_seen``: devices stored under the
  ``_unregistered`` unit (``smartunit devices --unregistered``).
"""

from __future__ import annotations

from collections.abc import Sequence

from collector.influx import BlockingQueries, quote_ident, quote_literal, rows

CHART_POINTS = 600  # about this many points, whatever the window: a chart, not an export


def series_means(family: str, device: str, quantity: str, start_ms: int, end_ms: int) -> str:
    step_s = max(1, (end_ms - start_ms) // (CHART_POINTS * 1000))
    return (
        f"SELECT mean({quote_ident(quantity)}) FROM {quote_ident(family)} "
        f'WHERE "device" = {quote_literal(device)} '
        f"AND time >= {start_ms}ms AND time <= {end_ms}ms "
        f"GROUP BY time({step_s}s) fill(none)"
    )


def read_series_means(
    influx: BlockingQueries,
    *,
    family: str,
    device: str,
    quantity: str,
    start_ms: int,
    end_ms: int,
) -> list[tuple[int, float]]:
    """(time_ms, mean) of one quantity of one device between two times."""
    query = series_means(family, device, quantity, start_ms, end_ms)
    return [(int(r["time"]), float(r["mean"])) for s in influx.query(query) for r in rows(s)]


def field_keys(family: str) -> str:
    return f"SHOW FIELD KEYS FROM {quote_ident(family)}"


def hourly_counts(family: str, fields: Sequence[str], start_ms: int, end_ms: int) -> str:
    counts = ", ".join(f"count({quote_ident(name)})" for name in fields)
    return (
        f"SELECT {counts} FROM {quote_ident(family)} "
        f"WHERE time >= {start_ms}ms AND time < {end_ms}ms GROUP BY time(1h) fill(none)"
    )


def readings_page(
    family: str, fields: Sequence[str], start_ms: int, end_ms: int, *, limit: int, offset: int
) -> str:
    columns = ", ".join(quote_ident(name) for name in ["device", *fields])
    return (
        f"SELECT {columns} FROM {quote_ident(family)} "
        f"WHERE time >= {start_ms}ms AND time < {end_ms}ms "
        f"LIMIT {limit} OFFSET {offset}"
    )


def _in_unit(unit: str) -> str:
    return f"{quote_ident('unit')} = {quote_literal(unit)}"


def unregistered_counts(family: str, unit: str) -> str:
    return (
        f"SELECT count(*) FROM {quote_ident(family)} WHERE {_in_unit(unit)} "
        f"GROUP BY {quote_ident('device')}"
    )


def unregistered_last_seen(family: str, unit: str) -> str:
    return (
        f"SELECT * FROM {quote_ident(family)} WHERE {_in_unit(unit)} "
        f"GROUP BY {quote_ident('device')} ORDER BY time DESC LIMIT 1"
    )

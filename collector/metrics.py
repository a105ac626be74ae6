"""The collector's Prometheus metrics: every family declared once, with its type and help.

``FAMILIES`` is the list: a family's name (without the ``smartunit_`` prefix), counter or
gauge, the help text Prometheus shows, its unit (a base unit, as Prometheus' conventions
ask: seconds, bytes, ratio), and for a labelled family the label and the values it is
known to take. Known label values are exposed as 0 from the start, so a rate() or an
alert rule over, say, ``smartunit_rejections_total{reason="bad_json"}`` has a series to
work on before the first bad message arrives, not only after it.

Values are read when Prometheus scrapes (``Collector.metrics()`` reads the counters the
hot path keeps anyway); nothing here runs per message. A value the collector reports
without a family here is still exposed, untyped and without help, and logged once: the
tests run ``promtool check metrics`` on a running collector's ``/metrics``, which fails
on it, so an undeclared metric is caught there rather than by a linter in production.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.registry import Collector as PrometheusCollector

from collector.alerts.model import EventType
from collector.detection import EventKind
from collector.protocol import REJECTION_REASONS

log = logging.getLogger(__name__)

PREFIX = "smartunit_"
# The text format's version, which Prometheus reads to choose its parser.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# Prometheus' base units; a family's name ends with its unit.
BASE_UNITS = frozenset({"seconds", "bytes", "ratio"})

# A plain family's value, or a labelled one's: label value -> value.
Value = float | Mapping[str, float]


@dataclass(frozen=True, kw_only=True)
class Family:
    name: str
    type: Literal["counter", "gauge"]
    help: str
    unit: str = ""
    label: str = ""
    known: tuple[str, ...] = ()  # label values exposed as 0 until they are counted
    # or: the setting whose entries are the label's values, each always reported
    values_from: str = ""


def _counter(name: str, help: str, *, label: str = "", known: tuple[str, ...] = ()) -> Family:
    return Family(name=name, type="counter", help=help, label=label, known=known)


def _gauge(
    name: str, help: str, *, unit: str = "", label: str = "", known: tuple[str, ...] = ()
) -> Family:
    return Family(name=name, type="gauge", help=help, unit=unit, label=label, known=known)


def _per_receiver(name: str, help: str, *, unit: str = "") -> Family:
    return Family(
        name=name,
        type="gauge",
        help=help,
        unit=unit,
        label="receiver",
        values_from="alerts.receivers",
    )


def _per_partition(name: str, help: str, *, unit: str = "") -> Family:
    return Family(
        name=name,
        type="gauge",
        help=help,
        unit=unit,
        label="partition",
        values_from="nats.partitions",
    )


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        # -- ingest -----------------------------------------------------------------------
        _counter("messages_received_total", "MQTT messages taken from the broker."),
        _counter("readings_accepted_total", "Readings that passed validation."),
        _counter(
            "readings_stored_total",
            "Readings handed off durably (InfluxDB, or the spool while it is down) "
            "and acknowledged to the broker.",
        ),
        _counter(
            "rejections_total",
            "Messages refused and quarantined, by reason (docs/device-protocol.md).",
            label="reason",
            known=tuple(REJECTION_REASONS),
        ),
        _counter(
            "unit_state_overwrites_total",
            "Messages from another client on a unit's retained alert state, each replaced "
            "with the service's.",
        ),
        _gauge(
            "rate_limited_devices",
            "Devices whose messages the per-device rate limit refused within the last quiet "
            "period.",
        ),
        _gauge("inbox_messages", "Messages received but not yet stored (the backlog)."),
        _gauge(
            "arrival_age_seconds",
            "Median delay from a reading's device time to its arrival, last stats interval.",
            unit="seconds",
        ),
        # -- storage ----------------------------------------------------------------------
        _counter("lines_written_total", "Points written to InfluxDB."),
        _counter("write_retries_total", "InfluxDB writes retried (429, 5xx, unreachable)."),
        _gauge("write_queue_batches", "Batches waiting for InfluxDB."),
        _gauge(
            "write_latency_seconds",
            "Exponentially weighted mean round trip of successful InfluxDB writes.",
            unit="seconds",
        ),
        _gauge("spool_bytes", "Bytes in the disk spool waiting for replay.", unit="bytes"),
        _gauge(
            "spool_fill_ratio",
            "Spool size over its limit (operator alert spool-nearly-full).",
            unit="ratio",
        ),
        _gauge(
            "spool_disk_full",
            "1 while the spool's disk refuses batches (operator alert disk-full), else 0.",
        ),
        _counter(
            "spool_corrupt_records_total",
            "Damaged spool records skipped on replay (operator alert spool-corrupt).",
        ),
        _counter(
            "spool_corrupt_bytes_total",
            "Bytes of damaged spool records skipped on replay.",
        ),
        # -- detection --------------------------------------------------------------------
        _counter("judged_readings_total", "Readings the detectors judged."),
        _counter("late_readings_total", "Readings the detectors skipped as late or repeated."),
        _counter(
            "clock_steps_back_total",
            "Device clocks that stepped back, their series re-anchored (docs/detectors.md).",
        ),
        _gauge("detector_series", "(device, quantity) series the detectors keep state for."),
        _counter(
            "detections_total",
            "Detector events, by kind.",
            label="kind",
            known=get_args(EventKind),
        ),
        _counter("detection_errors_total", "Bugs in detection caught without losing a reading."),
        # -- alerts -----------------------------------------------------------------------
        _counter(
            "alert_events_total",
            "Alert events, by type.",
            label="type",
            known=tuple(t.value for t in EventType),
        ),
        _counter("alert_errors_total", "Bugs in alerting caught without losing a reading."),
        _gauge(
            "alert_detections_waiting",
            "Detections waiting for the alert store to take them.",
        ),
        _counter("alert_store_failures_total", "Alert store writes that failed."),
        _counter(
            "alert_detections_dropped_total",
            "Detections given up by the waiting queue's overflow policy.",
        ),
        _gauge(
            "outbox_entries",
            "Webhook deliveries in the outbox, by status.",
            label="status",
            known=("pending", "delivered", "dead"),
        ),
        # -- webhook receivers (docs/webhooks.md, "When a receiver fails") ----------------
        _per_receiver("webhook_pending", "Events waiting for a receiver."),
        _per_receiver(
            "webhook_oldest_pending_age_seconds",
            "How long the oldest event waiting for a receiver has waited.",
            unit="seconds",
        ),
        _per_receiver(
            "webhook_consecutive_failures", "Failed attempts to a receiver since its last delivery."
        ),
        _per_receiver(
            "webhook_failing_seconds",
            "How long a receiver has failed since its last delivery (0 while it delivers).",
            unit="seconds",
        ),
        _per_receiver(
            "webhook_last_error_status",
            "HTTP status of a receiver's last failed attempt (0: no answer, or none failed).",
        ),
        _per_receiver("webhook_dead_letters", "A receiver's events in the dead-letter list."),
        _per_receiver(
            "webhook_failing_alert",
            "1 while the operator alert webhook-failing names the receiver, else 0.",
        ),
        # -- cluster (transport "nats", docs/cluster.md) -----------------------------------
        _gauge("cluster_instances", "Collector instances alive in the partition lease bucket."),
        _gauge("cluster_partitions_owned", "Partitions whose lease this instance holds."),
        _per_partition(
            "partition_lag",
            "Messages of a partition not yet acknowledged: waiting in the stream plus "
            "delivered and not acknowledged (operator alert partition-lag).",
        ),
        _per_partition(
            "partition_lease_age_seconds",
            "Time since a partition's lease was last renewed (expires at nats.lease_ttl_s).",
            unit="seconds",
        ),
        _counter(
            "partition_checkpoints_written_total",
            "Partition detector-state checkpoints written to the NATS object store.",
        ),
        _counter(
            "partition_checkpoints_restored_total",
            "Checkpoints restored on taking a partition over.",
        ),
        _counter(
            "partition_checkpoint_failures_total",
            "Checkpoints not written or not read (unreachable, past their deadline); the "
            "partition is judged from what this instance knows.",
        ),
        _counter(
            "partition_checkpoint_orphans_purged_total",
            "Chunk subjects of checkpoint writes cut short, purged from the object store.",
        ),
        # -- HTTP API ---------------------------------------------------------------------
        _counter(
            "api_refused_total",
            "Requests the API turned away before reading their body, by HTTP status: "
            "400 (bad Content-Length), 401/403 (token), 408 (too slow), 413 (too large).",
            label="status",
            known=("400", "401", "403", "408", "413"),
        ),
    )
}


class Exposition(PrometheusCollector):
    """What Prometheus scrapes: the collector's values, read now, under their families."""

    def __init__(self, read: Callable[[], Mapping[str, Value]]) -> None:
        self._read = read
        self._undeclared_logged: set[str] = set()

    def collect(self) -> Iterator[Metric]:
        for name, value in sorted(self._read().items()):
            family = FAMILIES.get(name)
            if family is None:
                yield self._undeclared(name, value)
            elif isinstance(value, Mapping):
                yield self._labelled(family, value)
            else:
                metric = self._metric(family, labels=())
                metric.add_metric((), value)
                yield metric

    def text(self) -> bytes:
        return generate_latest(self)

    @staticmethod
    def _metric(family: Family, labels: tuple[str, ...]) -> CounterMetricFamily | GaugeMetricFamily:
        name = PREFIX + family.name
        if family.type == "counter":
            return CounterMetricFamily(name, family.help, labels=labels, unit=family.unit)
        return GaugeMetricFamily(name, family.help, labels=labels, unit=family.unit)

    def _labelled(self, family: Family, values: Mapping[str, float]) -> Metric:
        metric = self._metric(family, labels=(family.label,))
        counted = {key: 0.0 for key in family.known} | {str(k): v for k, v in values.items()}
        for key, value in sorted(counted.items()):
            metric.add_metric((key,), value)
        return metric

    def _undeclared(self, name: str, value: Value) -> Metric:
        if name not in self._undeclared_logged:
            self._undeclared_logged.add(name)
            log.error("metric %s has no family in collector/metrics.py: exposed untyped", name)
        if isinstance(value, Mapping):
            metric = UnknownMetricFamily(PREFIX + name, "", labels=("key",))
            for key, each in sorted(value.items()):
                metric.add_metric((str(key),), each)
            return metric
        return UnknownMetricFamily(PREFIX + name, "", value=value)

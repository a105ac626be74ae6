"""The collector's counters: written by the parts on the event loop, read by /metrics,
the stats log line and the ``smartunit_ingest`` measurement."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class IngestStats:
    messages_received: int = 0
    readings_accepted: int = 0
    readings_stored: int = 0  # in InfluxDB or the spool, and acknowledged to the broker
    lines_written: int = 0
    write_requests: int = 0
    write_retries: int = 0
    batches_written: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    lines_dropped: Counter[str] = field(default_factory=Counter)
    detections: Counter[str] = field(default_factory=Counter)
    detection_errors: int = 0
    alert_events: Counter[str] = field(default_factory=Counter)
    alert_errors: int = 0
    outbox: dict[str, int] = field(default_factory=dict)
    # exponentially weighted mean of successful InfluxDB write round trips
    write_latency_ms: float = 0.0
    # median of (receive time - newest device time) per message, last stats interval
    arrival_age_s: float = 0.0
    spool_replayed: int = 0

    @property
    def rejected(self) -> int:
        return sum(self.rejections.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "messages_received": self.messages_received,
            "readings_accepted": self.readings_accepted,
            "readings_stored": self.readings_stored,
            "lines_written": self.lines_written,
            "write_requests": self.write_requests,
            "write_retries": self.write_retries,
            "batches_written": self.batches_written,
            "rejected": self.rejected,
            "rejections": dict(self.rejections),
            "lines_dropped": dict(self.lines_dropped),
            "detections": dict(self.detections),
            "detection_errors": self.detection_errors,
            "alert_events": dict(self.alert_events),
            "alert_errors": self.alert_errors,
            "outbox": dict(self.outbox),
        }

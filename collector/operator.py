"""Alerts about the collector itself: the same loop as the devices' alerts.

An ``OperatorAlarm`` watches one figure, measured once per stats interval: it raises an
alert (orange unless told) when the figure has been at or above its limit for
``intervals`` measurements in a row, and clears it once the figure falls below half the
limit (hysteresis, so a figure hovering on the line does not flap).

``SpoolWatch`` holds the disk spool's three: ``spool-nearly-full`` (orange, at 80 %),
``disk-full`` (red: the spool's disk refused a batch, so storage waits on InfluxDB and
the backlog grows at the broker; clears once the disk has room) and ``spool-corrupt``
(red: damaged records were skipped, and acknowledged readings in them are lost; raised
for the interval that found them, so it stays until a person acknowledges it).

A ``RateLimitWatch`` turns the messages the per-device rate limit refuses into alerts
that name the device (collector/ratelimit.py refuses them).

A ``ReceiverWatch`` raises ``webhook-failing`` naming a webhook receiver: orange once it
has failed for its ``alert_after_s`` without a delivery, red once an event of it went to
the dead-letter list (its people will never hear of that one); it clears when the
receiver delivers again and nothing more was dead-lettered. Routing keeps the alert from
the receiver it names (collector/alerts/notify.py): it reaches people through the others
and the console.
"""

from __future__ import annotations

import collections
import logging
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from collector.admission import OverCap
from collector.alerts.health import RECEIVER_FAILING_DETECTOR, ReceiverHealth
from collector.alerts.model import Alert
from collector.config import ReceiverSettings
from collector.detection import SYSTEM_FAMILY, DetectionEvent, EventKind
from collector.spool import DiskSpool

log = logging.getLogger(__name__)

OPERATOR_UNIT = "_collector"
SPOOL_DETECTOR = "spool-nearly-full"
SPOOL_ALERT_FILL = 0.8
DISK_FULL_DETECTOR = "disk-full"
SPOOL_CORRUPT_DETECTOR = "spool-corrupt"
QUANTITY_CAP_DETECTOR = "quantity-cap"
SERIES_CAP_DETECTOR = "series-cap"
RATE_LIMITED_DETECTOR = "rate-limited"
RATE_LIMITED_FLEET_DETECTOR = "rate-limited-devices"
# Alerts naming a device, open at once. Past this many devices over their limit, the
# likelier story is one cause (a firmware release, a limit set too low, a gateway
# replaying its buffer): one fleet alert stands for them, and the log names the worst.
MAX_RATE_LIMIT_ALERTS = 10
# A device's alert clears after this many stats intervals without a refused message.
RATE_LIMIT_QUIET_INTERVALS = 6
# Devices remembered per interval and while quiet: a flood of made-up ids costs no more.
MAX_RATE_LIMITED_TRACKED = 10_000


@dataclass(kw_only=True)
class OperatorAlarm:
    detector: str  # the alert's detector name, e.g. "collector-behind"
    quantity: str  # what is measured, e.g. "arrival_age_s"
    limit: float
    collector: str  # the collector's client id: the alert's "device"
    intervals: int = 1
    colour: str = "orange"
    raised: bool = False
    _over: int = 0

    def update(self, value: float, now_ms: int) -> list[DetectionEvent]:
        self._over = self._over + 1 if value >= self.limit else 0
        if not self.raised and self._over >= self.intervals:
            self.raised = True
            log.warning("operator alert raised", extra={"alert": self.detector, "value": value})
            return [self._event("raised", self.colour, "green", value, now_ms)]
        if self.raised and value < self.limit / 2:
            self.raised = False
            log.info("operator alert cleared", extra={"alert": self.detector, "value": value})
            return [self._event("cleared", "green", self.colour, value, now_ms)]
        return []

    def _event(
        self, kind: EventKind, colour: str, previous: str, value: float, now_ms: int
    ) -> DetectionEvent:
        return DetectionEvent(
            kind,
            self.detector,
            self.collector,
            SYSTEM_FAMILY,
            self.quantity,
            OPERATOR_UNIT,
            colour,
            previous,
            value,
            now_ms,
            threshold=self.limit,
        )


class SpoolWatch:
    """The disk spool's operator alerts, measured once per stats interval."""

    def __init__(self, spool: DiskSpool, *, collector: str) -> None:
        self.spool = spool
        self.nearly_full = OperatorAlarm(
            detector=SPOOL_DETECTOR,
            quantity="spool_fill",
            limit=SPOOL_ALERT_FILL,
            collector=collector,
        )
        self.disk_full = OperatorAlarm(
            detector=DISK_FULL_DETECTOR,
            quantity="spool_disk_full",
            limit=1.0,
            collector=collector,
            colour="red",
        )
        self.corrupt = OperatorAlarm(
            detector=SPOOL_CORRUPT_DETECTOR,
            quantity="spool_corrupt_records",
            limit=1.0,
            collector=collector,
            colour="red",
        )
        self._corrupt_seen = 0

    def check(self, now_ms: int) -> list[DetectionEvent]:
        spool = self.spool
        found = spool.corrupt_records - self._corrupt_seen
        self._corrupt_seen = spool.corrupt_records
        return [
            *self.nearly_full.update(spool.fill_ratio, now_ms),
            *self.disk_full.update(1.0 if spool.check_disk_full() else 0.0, now_ms),
            *self.corrupt.update(found, now_ms),
        ]


def cap_alert(over: OverCap, *, collector: str, limit: int, now_ms: int) -> DetectionEvent:
    """An orange alert for a cap of collector/admission.py reached: for a device over its
    quantities, the alert names the device; for the collector full, the collector (the
    refused devices are in the rejections)."""
    per_device = over.reason == "too_many_quantities"
    log.error(
        "a cap on series was reached: new quantities are dropped",
        extra={"reason": over.reason, "device": over.device, "admitted": over.admitted},
    )
    return DetectionEvent(
        "raised",
        QUANTITY_CAP_DETECTOR if per_device else SERIES_CAP_DETECTOR,
        over.device if per_device else collector,
        SYSTEM_FAMILY,
        "quantities" if per_device else "series",
        OPERATOR_UNIT,
        "orange",
        "green",
        float(over.admitted),
        now_ms,
        threshold=float(limit),
    )


class RecentMedian:
    """The median of the most recent ``keep`` values added since it was last taken.

    Bounded on purpose: at 30,000 messages/s a 10 s stats interval held 300,000 arrival
    ages, and their median took 30-45 ms of the event loop, a stall every alert in flight
    waited through (measured in bench/ingest.py's alert phase). The newest values are
    also the ones that say whether the collector is behind now.
    """

    def __init__(self, keep: int = 1001) -> None:
        self._values: collections.deque[float] = collections.deque(maxlen=keep)
        self.add: Callable[[float], None] = self._values.append  # per message: no wrapper

    def __len__(self) -> int:
        return len(self._values)

    def take(self) -> float | None:
        """The median, or None when nothing was added; starts the next interval."""
        if not self._values:
            return None
        median = statistics.median(self._values)
        self._values.clear()
        return median


class RateLimitWatch:
    """Operator alerts for devices over their rate limit, bounded whatever the flood.

    A device whose messages are refused raises a yellow ``rate-limited`` alert naming it
    (the worst first), up to ``MAX_RATE_LIMIT_ALERTS`` open at once. More devices refused
    within ``RATE_LIMIT_QUIET_INTERVALS`` raise one orange ``rate-limited-devices`` alert
    counting them, and no further device alerts open until it clears. Each clears on
    its own: a device's after that many quiet stats intervals, the fleet's once fewer
    than half the cap are still refused.
    """

    def __init__(self, *, collector: str) -> None:
        self.collector = collector
        self._refused: dict[str, int] = {}  # device -> messages refused this interval
        self._quiet: dict[str, int] = {}  # device refused lately -> quiet intervals since
        self.named: set[str] = set()  # devices with an alert open
        self._fleet = OperatorAlarm(
            detector=RATE_LIMITED_FLEET_DETECTOR,
            quantity="rate_limited_devices",
            limit=MAX_RATE_LIMIT_ALERTS + 1,
            collector=collector,
        )

    @property
    def devices(self) -> int:
        """Devices refused within the last quiet period (counted up to the tracking cap)."""
        return len(self._quiet)

    def refused(self, device: str) -> None:
        """One message of ``device`` refused (per message, in a flood: kept cheap)."""
        refused = self._refused
        if device in refused:
            refused[device] += 1
        elif len(refused) < MAX_RATE_LIMITED_TRACKED:
            refused[device] = 1

    def resume(self, alerts: Iterable[Alert]) -> None:
        """Take over the alerts an earlier run left open, so that they clear here too."""
        for alert in alerts:
            if not alert.condition_active:
                continue
            detector = alert.fingerprint.detector
            if detector == RATE_LIMITED_FLEET_DETECTOR:
                self._fleet.raised = True
            elif detector == RATE_LIMITED_DETECTOR and len(self._quiet) < MAX_RATE_LIMITED_TRACKED:
                self.named.add(alert.fingerprint.device)
                self._quiet[alert.fingerprint.device] = 0

    def update(self, now_ms: int) -> list[DetectionEvent]:
        """Once per stats interval: what opens and what clears."""
        refused, self._refused = self._refused, {}
        quiet = self._quiet
        events: list[DetectionEvent] = []
        for device in list(quiet):
            if device in refused:
                quiet[device] = 0
            elif quiet[device] + 1 >= RATE_LIMIT_QUIET_INTERVALS:
                del quiet[device]
                if device in self.named:
                    self.named.discard(device)
                    log.info(
                        "operator alert cleared",
                        extra={"alert": RATE_LIMITED_DETECTOR, "device": device},
                    )
                    events.append(self._event("cleared", device, 0, now_ms))
            else:
                quiet[device] += 1
        worst_first = sorted(refused.items(), key=lambda item: -item[1])
        for device, _ in worst_first:
            if device not in quiet and len(quiet) < MAX_RATE_LIMITED_TRACKED:
                quiet[device] = 0
        for device, count in worst_first:
            if self._fleet.raised or len(self.named) >= MAX_RATE_LIMIT_ALERTS:
                break
            if device in self.named or device not in quiet:
                continue
            self.named.add(device)
            log.warning(
                "device over its rate limit: its messages are refused",
                extra={"alert": RATE_LIMITED_DETECTOR, "device": device, "refused": count},
            )
            events.append(self._event("raised", device, count, now_ms))
        fleet = self._fleet.update(len(quiet), now_ms)
        if fleet and fleet[0].kind == "raised":
            log.warning(
                "devices over their rate limit: past the named ones, one alert counts them",
                extra={"devices": len(quiet), "worst": dict(worst_first[:20])},
            )
        events += fleet
        return events

    def _event(self, kind: EventKind, device: str, refused: int, now_ms: int) -> DetectionEvent:
        raised = kind == "raised"
        return DetectionEvent(
            kind,
            RATE_LIMITED_DETECTOR,
            device,
            SYSTEM_FAMILY,
            "refused_messages",  # in the stats interval it was raised in
            OPERATOR_UNIT,
            "yellow" if raised else "green",
            "green" if raised else "yellow",
            float(refused),
            now_ms,
        )


class ReceiverWatch:
    """Operator alerts for webhook receivers that fail or lose events, one per receiver."""

    def __init__(self, receivers: Iterable[tuple[ReceiverSettings, ReceiverHealth]]) -> None:
        self.receivers = {settings.name: (settings, health) for settings, health in receivers}
        self.raised: dict[str, str] = {}  # receiver -> colour of its open alert

    def resume(self, alerts: Iterable[Alert]) -> None:
        """Take over the alerts an earlier run left open, so that they clear here too."""
        for alert in alerts:
            if alert.fingerprint.detector == RECEIVER_FAILING_DETECTOR and alert.condition_active:
                self.raised[alert.fingerprint.device] = alert.colour

    def update(self, now_ms: int) -> list[DetectionEvent]:
        """Once per stats interval: what opens, rises and clears."""
        events = []
        for name in sorted(self.raised.keys() - self.receivers.keys()):
            # No longer configured: its events were dead-lettered at start, with a log.
            events.append(self._event("cleared", name, "green", self.raised.pop(name), 0, now_ms))
        for name, (settings, health) in self.receivers.items():
            lost = health.take_dead_letters()
            failing_s = health.failing_for_s(now_ms)
            was = self.raised.get(name)
            # Its last attempt delivered. Not yet known after a restart: an alert taken
            # over stays until the receiver shows it takes events.
            delivering = health.failing_since_ms is None and health.last_delivered_ms is not None
            if lost or (was == "red" and not delivering):
                colour: str | None = "red"
            elif failing_s >= settings.alert_after_s or (was is not None and not delivering):
                colour = "orange"
            else:
                colour = None
            if colour == was:
                continue
            extra = {
                "alert": RECEIVER_FAILING_DETECTOR,
                "receiver": name,
                "failing_for_s": round(failing_s, 1),
                "consecutive_failures": health.consecutive_failures,
                "last_error": health.last_error,
                "dead_lettered": lost,
            }
            if colour is None:
                log.info("operator alert cleared: webhook receiver delivers again", extra=extra)
                events.append(self._event("cleared", name, "green", was or "orange", 0, now_ms))
                del self.raised[name]
                continue
            log.error("operator alert: webhook receiver failing", extra=extra)
            kind: EventKind = "raised" if was is None else "changed"
            events.append(
                self._event(kind, name, colour, was or "green", failing_s, now_ms, settings)
            )
            self.raised[name] = colour
        return events

    @staticmethod
    def _event(  # noqa: PLR0917 - one alert's fields
        kind: EventKind,
        receiver: str,
        colour: str,
        previous: str,
        failing_s: float,
        now_ms: int,
        settings: ReceiverSettings | None = None,
    ) -> DetectionEvent:
        return DetectionEvent(
            kind,
            RECEIVER_FAILING_DETECTOR,
            receiver,
            SYSTEM_FAMILY,
            "failing_s",  # seconds since its first failed attempt without a delivery
            OPERATOR_UNIT,
            colour,
            previous,
            float(round(failing_s, 1)),  # a float: InfluxDB types the field by its first value
            now_ms,
            threshold=settings.alert_after_s if settings is not None else None,
        )

"""What goes to webhook receivers: routing, payloads and signatures.

Routing: a receiver takes an alert when the family, colour, escalation level and
hierarchy prefix (whole segments) match the alert's own; once it has taken an alert it
receives every later event of that alert (its ack, its close), even if the colour falls
below the receiver's minimum. A receiver that groups incidents takes the incident's
leading alert instead of the others, as soon as any alert of the incident matches it: a
red alert that joins a yellow incident brings the incident to an orange-only receiver.

Payloads (versioned): ``native`` v1::

    {"version": "1",
     "event": {"id", "seq", "type", "at", "actor", "note"},
     "alert": {"id", "state", "colour", "family", "device", "unit", "hierarchy",
               "quantity", "value", "threshold", "detector", "incident",
               "incident_colour", "started_at", "updated_at", "url"}}

and ``alertmanager`` (Alertmanager webhook ``version: "4"``, one alert per message): the
labels and annotations that Alertmanager receivers read (``severity`` from the receiver's
table, ``instance``, ``value``; docs/webhooks.md has the whole mapping).

Headers: ``X-SmartUnit-Event-Id`` (the idempotency key, ``<alert id>-<seq>``) and
``X-SmartUnit-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
from collections.abc import Sequence

import orjson

from collector.alerts.health import receiver_reported_on
from collector.alerts.model import Alert, AlertEvent, State, iso_time, within
from collector.alerts.outbox import OutboxEntry
from collector.config import ReceiverSettings
from detectors.levels import COLOURS

EVENT_ID_HEADER = "X-SmartUnit-Event-Id"
SIGNATURE_HEADER = "X-SmartUnit-Signature"


def _matches(receiver: ReceiverSettings, alert: Alert) -> bool:
    if receiver.families and alert.family not in receiver.families:
        return False
    if receiver.levels and alert.level not in receiver.levels:
        return False
    if COLOURS.index(alert.colour) < COLOURS.index(receiver.min_colour):
        return False
    return within(alert.hierarchy, receiver.hierarchy_prefix)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_signature(
    secret: str, body: bytes, header: str, *, now: int, tolerance_s: int = 300
) -> bool:
    """What a receiver does (see docs/webhooks.md): check the HMAC and the timestamp."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class Notifier:
    def __init__(self, receivers: Sequence[ReceiverSettings], public_url: str) -> None:
        self.receivers = {r.name: r for r in receivers}
        self.public_url = public_url.rstrip("/")

    def route(
        self, alert: Alert, events: Sequence[AlertEvent], incident: Sequence[Alert] = ()
    ) -> list[OutboxEntry]:
        """Outbox entries for these events; remembers the receivers in the alert.

        ``incident``: the other active alerts of the alert's incident."""
        taken = set(alert.receivers)
        for name, wanted in self.receivers.items():
            if not wanted.group_incidents:
                if _matches(wanted, alert):
                    taken.add(name)
            elif alert.leads_incident and any(_matches(wanted, a) for a in (alert, *incident)):
                taken.add(name)
        # The alert about a failing receiver would wait on the very failure it reports.
        taken.discard(receiver_reported_on(alert) or "")
        alert.receivers = sorted(taken)
        entries = []
        for name in sorted(taken):
            receiver = self.receivers.get(name)
            if receiver is None:
                continue  # removed from the configuration since
            for event in events:
                body = (
                    self.native(alert, event)
                    if receiver.format == "native"
                    else self.alertmanager(alert, event, name)
                )
                entries.append(OutboxEntry(name, event.id, event.alert_id, event.seq, body))
        return entries

    def _alert_json(self, alert: Alert, alert_id: int) -> dict[str, object]:
        # a new alert's first events are routed before the store numbers it
        return dataclasses.replace(alert, id=alert_id).summary(self.public_url)

    def native(self, alert: Alert, event: AlertEvent) -> bytes:
        return orjson.dumps(
            {
                "version": "1",
                "event": {
                    "id": event.id,
                    "seq": event.seq,
                    "type": event.type.value,
                    "at": iso_time(event.at_ms),
                    "actor": event.actor,
                    "note": event.note,
                },
                "alert": self._alert_json(alert, event.alert_id),
            }
        )

    def alertmanager(self, alert: Alert, event: AlertEvent, receiver: str) -> bytes:
        """One Alertmanager webhook message (``version: "4"``) for one alert's event.

        Firing until a person reports the alert resolved (or it is verified closed): an
        alert whose readings went back to normal by themselves still waits for someone
        to acknowledge it, and Alertmanager receivers stop paging on ``resolved``."""
        settings = self.receivers[receiver]
        resolved = alert.state in (State.RESOLVED, State.CLOSED)
        status = "resolved" if resolved else "firing"
        labels = alertmanager_labels(alert, settings)
        annotations = self._annotations(alert, event, settings)
        group_key = f'{{}}:{{alert_id="{event.alert_id}"}}'
        return orjson.dumps(
            {
                "version": "4",
                # One alert per message, so one group per alert: a receiver that resolves
                # a group on "resolved" (Grafana OnCall) must not close a neighbour's.
                "groupKey": group_key,
                "truncatedAlerts": 0,
                "status": status,
                "receiver": receiver,
                "groupLabels": {k: v for k, v in labels.items() if k in ("alertname", "instance")},
                "commonLabels": labels,
                "commonAnnotations": annotations,
                "externalURL": self.public_url,
                "alerts": [
                    {
                        "status": status,
                        "labels": labels,
                        "annotations": annotations,
                        "startsAt": iso_time(alert.started_at_ms),
                        "endsAt": iso_time(alert.updated_at_ms)
                        if resolved
                        else "0001-01-01T00:00:00Z",
                        "generatorURL": f"{self.public_url}/alerts/{event.alert_id}",
                        # the alert's id: stable through colour changes and restarts
                        "fingerprint": f"{event.alert_id:016x}",
                    }
                ],
            }
        )

    def _annotations(
        self, alert: Alert, event: AlertEvent, settings: ReceiverSettings
    ) -> dict[str, str]:
        fingerprint = alert.fingerprint
        threshold = alert.threshold
        incident_colour = alert.incident_colour or alert.colour
        value = _number(alert.value)
        reading = f"{fingerprint.quantity} {value}" if fingerprint.quantity and value else ""
        if reading and threshold is not None:
            reading += f" (threshold {_number(threshold)})"
        where = f"{fingerprint.device} of {alert.unit}" if alert.unit else fingerprint.device
        annotations = {
            "summary": f"{alert.colour} {fingerprint.detector} on {where}"
            + (f": {reading}" if reading else ""),
            "value": value,
            "threshold": _number(threshold),
            "quantity": fingerprint.quantity,
            "unit": alert.unit,
            "state": alert.state.value,
            "acknowledged": "true" if alert.acknowledged else "false",
            "condition": "active" if alert.condition_active else "cleared",
            "level": alert.level,
            "alert_id": str(event.alert_id),
            "event_id": event.id,
            "event_type": event.type.value,
            "actor": event.actor,
            "note": event.note,
            "incident": str(alert.incident or event.alert_id),
            "incident_colour": incident_colour,
            "incident_severity": severity_of(incident_colour, settings),
            "console_url": f"{self.public_url}/alerts/{event.alert_id}",
        }
        return {name: text for name, text in annotations.items() if text}


def severity_of(colour: str, settings: ReceiverSettings) -> str:
    """The receiver's severity for a colour; a colour it has no entry for counts as red
    (an alarm is never sent as less than it may be)."""
    for known, severity in settings.severities.items():
        if known == colour:
            return severity
    return settings.severities["red"]


def alertmanager_labels(alert: Alert, settings: ReceiverSettings) -> dict[str, str]:
    """What identifies the alert and routes it: one alert per device, detector and quantity
    (``instance`` and ``event`` are what Alerta keys alerts by), in Prometheus' naming."""
    fingerprint = alert.fingerprint
    own = {
        "alertname": fingerprint.detector,
        "event": f"{fingerprint.detector}:{fingerprint.quantity}"
        if fingerprint.quantity
        else fingerprint.detector,
        "instance": fingerprint.device or alert.unit,
        "severity": severity_of(alert.colour, settings),
        "colour": alert.colour,
        "device": fingerprint.device,
        "quantity": fingerprint.quantity,
        "unit": alert.unit,
        "family": alert.family,
        "service": alert.unit,
        "group": alert.family,
    }
    merged = {**alert.hierarchy, **own, **settings.labels}
    return {name: text for name, text in merged.items() if text}


def _number(value: object) -> str:
    """A reading as text for an annotation (Alertmanager's annotations are strings)."""
    if not isinstance(value, int | float) or math.isnan(value):
        return ""
    return repr(float(value))

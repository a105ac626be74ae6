"""Receiver formats: how one alert event becomes one webhook body.

A format is a class taking the console's public URL, with ``payload(alert, event,
receiver) -> bytes``, registered under its name in ``FORMATS`` (the name a receiver's
``format`` setting gives).

``native`` v1::

    {"version": "1",
     "event": {"id", "seq", "type", "at", "actor", "note"},
     "alert": {"id", "state", "colour", "family", "device", "unit", "hierarchy",
               "quantity", "value", "threshold", "detector", "incident",
               "incident_colour", "started_at", "updated_at", "url"}}

``alertmanager`` (Alertmanager webhook ``version: "4"``, one alert per message): the
labels and annotations that Alertmanager receivers read (``severity`` from the receiver's
table, ``instance``, ``value``; docs/webhooks.md has the whole mapping).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

import orjson

from collector.alerts.model import Alert, AlertEvent, State, iso_time
from collector.config import ReceiverSettings


class ReceiverFormat(Protocol):
    def __init__(self, public_url: str) -> None: ...
    def payload(self, alert: Alert, event: AlertEvent, receiver: ReceiverSettings) -> bytes: ...


def _alert_json(alert: Alert, alert_id: int, public_url: str) -> dict[str, object]:
    # a new alert's first events are routed before the store numbers it
    return dataclasses.replace(alert, id=alert_id).summary(public_url)


class NativeFormat:
    def __init__(self, public_url: str) -> None:
        self.public_url = public_url.rstrip("/")

    def payload(self, alert: Alert, event: AlertEvent, receiver: ReceiverSettings) -> bytes:
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
                "alert": _alert_json(alert, event.alert_id, self.public_url),
            }
        )


class AlertmanagerFormat:
    def __init__(self, public_url: str) -> None:
        self.public_url = public_url.rstrip("/")

    def payload(self, alert: Alert, event: AlertEvent, receiver: ReceiverSettings) -> bytes:
        """One Alertmanager webhook message (``version: "4"``) for one alert's event.

        Firing until a person reports the alert resolved (or it is verified closed): an
        alert whose readings went back to normal by themselves still waits for someone
        to acknowledge it, and Alertmanager receivers stop paging on ``resolved``."""
        resolved = alert.state in (State.RESOLVED, State.CLOSED)
        status = "resolved" if resolved else "firing"
        labels = alertmanager_labels(alert, receiver)
        annotations = self._annotations(alert, event, receiver)
        group_key = f'{{}}:{{alert_id="{event.alert_id}"}}'
        return orjson.dumps(
            {
                "version": "4",
                # One alert per message, so one group per alert: a receiver that resolves
                # a group on "resolved" (Grafana OnCall) must not close a neighbour's.
                "groupKey": group_key,
                "truncatedAlerts": 0,
                "status": status,
                "receiver": receiver.name,
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


# Format name (a receiver's ``format``) -> its class.
FORMATS: dict[str, type[ReceiverFormat]] = {
    "native": NativeFormat,
    "alertmanager": AlertmanagerFormat,
}

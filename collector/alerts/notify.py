"""What goes to webhook receivers: routing and signatures.

Routing: a receiver takes an alert when the family, colour, escalation level and
hierarchy prefix (whole segments) match the alert's own; once it has taken an alert it
receives every later event of that alert (its ack, its close), even if the colour falls
below the receiver's minimum. A receiver that groups incidents takes the incident's
leading alert instead of the others, as soon as any alert of the incident matches it: a
red alert that joins a yellow incident brings the incident to an orange-only receiver.

Payloads: by the receiver's ``format``, from collector/alerts/formats.py.

Headers: ``X-SmartUnit-Event-Id`` (the idempotency key, ``<alert id>-<seq>``) and
``X-SmartUnit-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from collector.alerts.formats import FORMATS
from collector.alerts.health import receiver_reported_on
from collector.alerts.model import COLOURS, Alert, AlertEvent, within
from collector.alerts.outbox import OutboxEntry
from collector.config import ReceiverSettings

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
        self.formats = {name: kind(self.public_url) for name, kind in FORMATS.items()}

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
            encode = self.formats[receiver.format]
            for event in events:
                body = encode.payload(alert, event, receiver)
                entries.append(OutboxEntry(name, event.id, event.alert_id, event.seq, body))
        return entries

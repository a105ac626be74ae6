"""The unit downlink: each unit's alert state, retained for on-site displays and sirens,
and acknowledgements from on-site panels.

    smartunit/v1/units/{unit}/alert   collector -> panels, retained: the worst active colour
    smartunit/v1/units/{unit}/ack     panel -> collector: {"alert_id": 17, "actor": "..."}

Who may publish an ack is the broker's first decision: only the principal ``unit@{unit}``
may write its unit's ack topic (config/mosquitto.acl; "@" is in no device id, so no
device can hold that name). The collector then checks what the broker cannot: that the
topic is exactly an ack topic, that the unit is a real one (pseudo-units such as the
silent fleet or the collector's own alerts have no panel), and that the alert is that
unit's.

The retained state is the collector's alone to write. Whatever else lands there (a
client given too much by a broker's ACL, a state left from before a crash) is counted,
logged and overwritten with the state the alert store gives, at most once per topic
per ``RESTORE_INTERVAL_S``: two writers that disagree (two collectors on one broker)
then trade a message every interval instead of flooding the broker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence

import orjson

from collector.alerts.model import COLOURS, Alert, worst_level
from collector.errors import FieldAckError
from collector.logs import RateLimitedLog
from collector.plaintext import clean_name, clean_text
from collector.protocol import TOPIC_ROOT, Rejection, topic_level

log = logging.getLogger(__name__)

UNIT_TOPIC_ROOT = f"{TOPIC_ROOT}/units"
UNIT_ACK_SUBSCRIPTION = f"{UNIT_TOPIC_ROOT}/+/ack"
UNIT_STATE_SUBSCRIPTION = f"{UNIT_TOPIC_ROOT}/+/alert"
UNIT_TOPIC_KINDS = frozenset({"ack", "alert"})
RESTORE_INTERVAL_S = 0.5
MAX_CONTESTED_TOPICS = 10_000  # overwritten topics waiting for their restoration
_ROOT_LEVELS = UNIT_TOPIC_ROOT.split("/")


def parse_unit_topic(topic: str) -> tuple[str, str] | None:
    """``(unit, kind)`` of exactly ``smartunit/v1/units/{unit}/{ack|alert}``, else None."""
    levels = topic.split("/")
    if len(levels) != len(_ROOT_LEVELS) + 2 or levels[: len(_ROOT_LEVELS)] != _ROOT_LEVELS:
        return None
    unit, kind = levels[-2], levels[-1]
    if not unit or kind not in UNIT_TOPIC_KINDS:
        return None
    return unit, kind


def unit_state_topic(unit: str) -> str:
    return f"{UNIT_TOPIC_ROOT}/{topic_level(unit)}/alert"


def unit_state_body(unit: str, active: Sequence[Alert]) -> bytes:
    """The retained state of a unit with these active alerts; empty (cleared) with none."""
    if not active:
        return b""
    return orjson.dumps(
        {
            "unit": unit,
            "colour": COLOURS[worst_level(active)],
            "count": len(active),
            "alerts": [
                {
                    "id": a.id,
                    "colour": a.colour,
                    "state": a.state.value,
                    "device": a.fingerprint.device,
                }
                for a in active
            ],
        }
    )


def retained_ack_rejection(unit: str, payload: bytes) -> Rejection:
    """The broker's retained copy of an on-site acknowledgement, replayed to every new
    subscription: an acknowledgement is an act, once; replayed, it would silence an alert
    that came back."""
    return Rejection(
        "retained",
        "the broker's retained copy of an on-site acknowledgement; acknowledge with retain off",
        "units",
        unit,
        payload=payload[:512].decode("utf-8", errors="replace"),
    )


def parse_ack(payload: bytes) -> tuple[int, str, str]:
    """``(alert_id, actor, note)`` of an ack payload; ValueError says what is wrong."""
    try:
        request = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise FieldAckError("the payload is not JSON") from None
    if not isinstance(request, dict):
        raise FieldAckError("the payload is not a JSON object")
    alert_id = request.get("alert_id")
    if not isinstance(alert_id, int) or isinstance(alert_id, bool) or alert_id < 1:
        raise FieldAckError('"alert_id" must be a positive JSON integer')
    actor = request.get("actor", "")
    note = request.get("note", "")
    if not isinstance(actor, str) or not isinstance(note, str):
        raise FieldAckError('"actor" and "note" must be strings')
    # stripped, not refused: a panel cannot be told, and its ack must count
    return alert_id, clean_name(actor)[:200] or "on-site", clean_text(note)[:4000]


class UnitStates:
    """What the collector last published on each unit's retained alert topic, and the
    restoration of those someone else overwrote.

    Thread-safe: alert events, and so publications, come from the HTTP API's threads too.
    Computing a state and publishing it happen under one lock, so the newest state is
    always the last one published.
    """

    def __init__(
        self,
        publish: Callable[[str, bytes], None],
        *,
        current: Callable[[str], bytes] | None = None,
    ) -> None:
        """``current``: for an alert store shared with other instances, the state a topic
        should hold as the store has it now. Those instances publish a unit's state when
        they change its alerts, so what this one last published may be stale: a differing
        state is first checked against the store, and kept when the store agrees."""
        self._publish = publish
        self._current = current
        self._lock = threading.Lock()
        self._published: dict[str, bytes] = {}  # only units with active alerts
        # overwritten topics, in arrival order, with what was seen there
        self._contested: dict[str, bytes] = {}
        self._log = RateLimitedLog(log, 60.0)
        self.overwrites = 0
        self.restored = 0
        self.unrestored = 0  # overwrites past MAX_CONTESTED_TOPICS, left as they were

    def prime(self, bodies: Mapping[str, bytes]) -> None:
        """What the retained topics should hold at start (from the alert store)."""
        with self._lock:
            self._published.update({topic: body for topic, body in bodies.items() if body})

    def publish(self, topic: str, compute: Callable[[], bytes]) -> None:
        with self._lock:
            self._send(topic, compute())

    def observe(self, topic: str, payload: bytes) -> bool:
        """A message on a unit's state topic, not published by this collector: True if it
        differs from the collector's state (and so will be overwritten)."""
        with self._lock:
            if payload == self._published.get(topic, b""):
                return False
            if topic not in self._contested and len(self._contested) >= MAX_CONTESTED_TOPICS:
                self.overwrites += 1
                self.unrestored += 1
                return True
            self._contested[topic] = payload
            if self._current is not None:
                return True  # told apart from an overwrite by the store, in restore()
            self.overwrites += 1
        self._overwritten(topic)
        return True

    def _overwritten(self, topic: str) -> None:
        self._log.warning(
            "unit_state_overwritten",
            "a unit's retained alert state was overwritten by another client: restoring it",
            topic=topic[:200],
        )

    def restore(self) -> int:
        """Publish the collector's state again on every topic overwritten since the last
        call; how many. With a shared store (``current``) the store says what the topic
        should hold: another instance's newer state is kept, not overwritten (this reads
        the store: call it off the event loop)."""
        with self._lock:
            contested = dict(self._contested)
            self._contested.clear()
            restored = 0
            for topic, seen in contested.items():
                body = self._published.get(topic, b"")
                if self._current is not None:
                    try:
                        body = self._current(topic)
                    except Exception:
                        # The store unreachable: these wait for the next turn.
                        for left in list(contested)[list(contested).index(topic) :]:
                            self._contested.setdefault(left, contested[left])
                        raise
                    if body == seen:  # another instance published the store's state
                        self._remember(topic, body)
                        continue
                    self.overwrites += 1
                    self._overwritten(topic)
                self._send(topic, body)
                restored += 1
            self.restored += restored
        return restored

    def _remember(self, topic: str, body: bytes) -> None:
        if body:
            self._published[topic] = body
        else:
            self._published.pop(topic, None)

    def _send(self, topic: str, body: bytes) -> None:
        self._remember(topic, body)
        self._publish(topic, body)

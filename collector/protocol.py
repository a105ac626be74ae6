"""Device protocol v1: topics, payload models, and decoding into storable readings.

See ``docs/device-protocol.md`` for the contract as firmware engineers read it. Every
message either becomes readings or rejections (never an exception): one rejection per
invalid object inside an array, one per message when the whole message is unusable (bad
topic, bad JSON, too large). Rejection reasons are short stable codes, listed in
``REJECTION_REASONS``; the detail text says what exactly was wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from collector.families import FAMILIES, PLUGINS
from collector.families.base import Reading, ReadingPayload
from collector.lineprotocol import encode_line
from collector.registry import DEVICE_ID_PATTERN, DEVICE_ID_RULE, Registry

if TYPE_CHECKING:
    from collector.admission import QuantityAdmission

TOPIC_ROOT = "smartunit/v1"
DATA_SUBSCRIPTION = f"{TOPIC_ROOT}/+/+/data"
STATUS_SUBSCRIPTION = f"{TOPIC_ROOT}/+/+/status"
REJECTED_ROOT = f"{TOPIC_ROOT}/_rejected"

STATUS_MEASUREMENT = "device_status"

__all__ = ["FAMILIES", "PAYLOAD_MODELS", "Reading", "ReadingPayload"]

REJECTION_REASONS: dict[str, str] = {
    "bad_topic": "the topic is not smartunit/v1/{family}/{device_id}/data|status",
    "unknown_family": f"the family in the topic is not one of {', '.join(FAMILIES)}",
    "bad_device_id": f"the device id in the topic breaks the rule: {DEVICE_ID_RULE}",
    "family_mismatch": "the registry lists this device under another family",
    "payload_too_large": "the payload is larger than ingest.max_payload_bytes",
    "bad_json": "the payload is not valid UTF-8 JSON",
    "not_an_object": "the payload (or an array element) is not a JSON object",
    "empty_batch": "the payload is an empty array",
    "batch_too_large": "the array has more than ingest.max_objects_per_message objects",
    "device_mismatch": "the payload names a device other than the topic's",
    "missing_field": "a required field is missing",
    "wrong_type": "a field has the wrong JSON type (e.g. a string or a float for a count)",
    "out_of_range": "a value is outside its allowed range (e.g. a negative count)",
    "bad_quantity_name": "a chem quantity name is not [a-z][a-z0-9_]{0,63} or is reserved",
    "bad_timestamp": "ts is neither epoch seconds nor an RFC 3339 time with an offset",
    "ts_in_future": "ts lies further in the future than ingest.max_future_s",
    "ts_too_old": "ts lies further in the past than ingest.max_age_s",
    "bad_status": 'a status message that is not {"state": "online"|"offline"}',
    "retained": "a data message (or on-site acknowledgement) the broker kept, published "
    "with retain, and replays to every new subscription: it would happen again at every "
    "reconnect",
    "rate_limited": "the device sent more than ingest.device_rate_per_s messages per second "
    "(beyond ingest.device_burst at once)",
    "ack_refused": "an on-site acknowledgement on smartunit/v1/units/{unit}/ack that is not "
    'a JSON {"alert_id": n}, names an alert of another unit or none, or comes for a '
    "pseudo-unit (_fleet, _collector, _unregistered), which has no panel",
    "too_many_quantities": "the device named more new quantities than "
    "ingest.max_quantities_per_device; those are dropped, the rest of the reading stored",
    "too_many_series": "the collector holds detection.max_series series; a reading's new "
    "quantities are dropped, the rest of it stored",
}

_TYPE_ERRORS = {"int_type", "float_type", "string_type", "dict_type", "bool_type", "model_type"}
_RANGE_ERRORS = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "finite_number",
    "too_long",
    "too_short",
}

PAYLOAD_MODELS: dict[str, type[ReadingPayload]] = {
    name: family.payload for name, family in PLUGINS.items()
}


class StatusPayload(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    state: Literal["online", "offline"]
    ts: float | str | None = None


@dataclass(frozen=True, slots=True)
class Topic:
    family: str
    device: str
    kind: str  # "data" | "status"


@dataclass(slots=True)
class Rejection:
    reason: str
    detail: str
    family: str
    device: str
    index: int | None = None  # position inside an array payload
    payload: Any = None  # the offending object, or a prefix of the raw payload

    def to_json(self, topic: str, received_ms: int) -> bytes:
        return orjson.dumps(
            {
                "reason": self.reason,
                "detail": self.detail,
                "topic": topic,
                "index": self.index,
                "received_at_ms": received_ms,
                "payload": self.payload,
            },
            default=str,
        )


@dataclass(slots=True)
class Decoded:
    readings: list[Reading] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    max_payload_bytes: int = 256 * 1024
    max_objects_per_message: int = 1000
    max_future_ms: int = 300_000
    max_age_ms: int = 30 * 24 * 3600 * 1000


def parse_topic(topic: str) -> Topic | Rejection:
    parts = topic.split("/")
    if (
        len(parts) != 5
        or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT
        or parts[4]
        not in {
            "data",
            "status",
        }
    ):
        family = parts[2] if len(parts) > 2 else "_"
        device = parts[3] if len(parts) > 3 else "_"
        return Rejection("bad_topic", f"unexpected topic {topic[:200]!r}", family, device)
    family, device, kind = parts[2], parts[3], parts[4]
    if family not in FAMILIES:
        return Rejection(
            "unknown_family",
            f"family {family[:80]!r} is not one of {', '.join(FAMILIES)}",
            family,
            device,
        )
    if not DEVICE_ID_PATTERN.fullmatch(device):
        return Rejection(
            "bad_device_id", f"device id {device[:80]!r}: {DEVICE_ID_RULE}", family, device
        )
    return Topic(family, device, kind)


def parse_ts(value: float | str, *, family: str = "", device: str = "") -> int | Rejection:
    """Device time in epoch milliseconds, or a rejection saying why it is not a time."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return Rejection(
                "bad_timestamp", f"ts {value[:60]!r} is not an RFC 3339 time", family, device
            )
        if moment.tzinfo is None:
            return Rejection(
                "bad_timestamp",
                f"ts {value[:60]!r} has no UTC offset; RFC 3339 needs one, e.g. ...Z or +08:00",
                family,
                device,
            )
        return round(moment.timestamp() * 1000)
    scaled = value * 1000
    if not math.isfinite(scaled):  # 1e308 is finite, its milliseconds are not
        return Rejection("bad_timestamp", "ts must be a finite number of seconds", family, device)
    return round(scaled)


def _first_error(exc: ValidationError) -> tuple[str, str]:
    error = exc.errors(include_url=False)[0]
    kind = error["type"]
    where = ".".join(str(p) for p in error["loc"])
    message = f"{where}: {error['msg']}" if where else str(error["msg"])
    if kind in REJECTION_REASONS:
        return kind, message
    if kind == "missing":
        return "missing_field", message
    if kind in _TYPE_ERRORS or kind.endswith("_type") or kind.endswith("_parsing"):
        return "wrong_type", message
    if kind in _RANGE_ERRORS:
        return "out_of_range", message
    return "wrong_type", message


def topic_level(text: str) -> str:
    """``text`` as one topic level that cannot break the topic tree (no separators,
    wildcards or NUL; never empty)."""
    cleaned = "".join("_" if c in "/+#\x00" else c for c in text)[:128]
    return cleaned or "_"


def _raw_preview(payload: bytes) -> str:
    return payload[:512].decode("utf-8", errors="replace")


class Decoder:
    """Turns one MQTT message into readings and rejections; holds no per-message state.

    With an ``admission``, new series are admitted under its caps (collector/admission.py).
    """

    def __init__(
        self, limits: Limits | None = None, *, admission: QuantityAdmission | None = None
    ) -> None:
        self.limits = limits or Limits()
        self.admission = admission

    def decode(
        self, topic: str, payload: bytes, received_ms: int, registry: Registry
    ) -> Decoded | Rejection:
        """A data message's readings and rejections, or one rejection for the whole message."""
        parsed = parse_topic(topic)
        if isinstance(parsed, Rejection):
            return parsed
        family, device = parsed.family, parsed.device
        placement = registry.placement(device)
        if placement.family is not None and placement.family != family:
            return Rejection(
                "family_mismatch",
                f"registry lists {device} as {placement.family}, topic says {family}",
                family,
                device,
            )
        objects = self._objects(payload, family, device)
        if isinstance(objects, Rejection):
            return objects
        model = PAYLOAD_MODELS[family]
        out = Decoded()
        index: int | None
        for index, obj in objects:
            result = self.reading(model, obj, family, device, received_ms)
            if isinstance(result, Reading) and self.admission is not None:
                admitted, refused = self.admission.admit(result, registry)
                if refused is not None:
                    refused.index, refused.payload = index, obj
                    out.rejections.append(refused)
                if admitted is None:
                    continue
                result = admitted
            if isinstance(result, Rejection):
                result.index = index
                result.payload = obj
                out.rejections.append(result)
            else:
                out.readings.append(result)
        return out

    def _objects(
        self, payload: bytes, family: str, device: str
    ) -> list[tuple[int | None, Any]] | Rejection:
        limits = self.limits
        too_large = self._check_size(payload, family, device)
        if too_large is not None:
            return too_large
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return Rejection(
                "bad_json", str(exc)[:200], family, device, payload=_raw_preview(payload)
            )
        if isinstance(data, dict):
            return [(None, data)]
        if not isinstance(data, list):
            return Rejection(
                "not_an_object",
                f"payload is a JSON {type(data).__name__}",
                family,
                device,
                payload=data if not isinstance(data, str) else data[:200],
            )
        if not data:
            return Rejection("empty_batch", "payload is an empty array", family, device)
        if len(data) > limits.max_objects_per_message:
            return Rejection(
                "batch_too_large",
                f"{len(data)} objects > {limits.max_objects_per_message}",
                family,
                device,
            )
        return list(enumerate(data))

    def reading(
        self,
        model: type[ReadingPayload],
        obj: Any,
        family: str,
        device: str,
        received_ms: int,
    ) -> Reading | Rejection:
        if not isinstance(obj, dict):
            return Rejection(
                "not_an_object", f"element is a JSON {type(obj).__name__}", family, device
            )
        try:
            item = model.model_validate(obj)
        except ValidationError as exc:
            reason, detail = _first_error(exc)
            return Rejection(reason, detail, family, device)
        for claimed in (item.device, item.device_id):
            if claimed is not None and claimed != device:
                return Rejection(
                    "device_mismatch",
                    f"payload names device {claimed[:80]!r}, topic names {device!r}",
                    family,
                    device,
                )
        ts_ms = received_ms
        if item.ts is not None:
            parsed = parse_ts(item.ts, family=family, device=device)
            if isinstance(parsed, Rejection):
                return parsed
            ts_ms = parsed
            problem = self._check_age(ts_ms, received_ms, family, device)
            if problem is not None:
                return problem
        return Reading(family, device, ts_ms, item.storable_fields(), item.seq)

    def _check_size(self, payload: bytes, family: str, device: str) -> Rejection | None:
        if len(payload) <= self.limits.max_payload_bytes:
            return None
        return Rejection(
            "payload_too_large",
            f"{len(payload)} bytes > {self.limits.max_payload_bytes}",
            family,
            device,
            payload=_raw_preview(payload[:128]),
        )

    def _check_age(self, ts_ms: int, now_ms: int, family: str, device: str) -> Rejection | None:
        limits = self.limits
        if ts_ms > now_ms + limits.max_future_ms:
            hint = " (it looks like milliseconds; ts is in seconds)" if ts_ms > 1e14 else ""
            return Rejection(
                "ts_in_future",
                f"ts is {(ts_ms - now_ms) / 1000:.0f} s ahead of the collector's clock{hint}",
                family,
                device,
            )
        if ts_ms < now_ms - limits.max_age_ms:
            return Rejection(
                "ts_too_old",
                f"ts is {(now_ms - ts_ms) / 86_400_000:.1f} days old",
                family,
                device,
            )
        return None

    def decode_status(
        self, topic: Topic, payload: bytes, received_ms: int
    ) -> tuple[bool, int] | Rejection:
        """(online, ts_ms) of a status message, held to a reading's size and time limits."""
        too_large = self._check_size(payload, topic.family, topic.device)
        if too_large is not None:
            return too_large
        try:
            status = StatusPayload.model_validate_json(payload)
        except ValidationError as exc:
            return Rejection(
                "bad_status",
                _first_error(exc)[1],
                topic.family,
                topic.device,
                payload=_raw_preview(payload),
            )
        ts_ms = received_ms
        if status.ts is not None:
            parsed = parse_ts(status.ts, family=topic.family, device=topic.device)
            if isinstance(parsed, int):
                problem = self._check_age(parsed, received_ms, topic.family, topic.device)
                ts_ms = parsed
            else:
                problem = parsed
            if problem is not None:
                problem.payload = _raw_preview(payload)
                return problem
        return status.state == "online", ts_ms


def retained_rejection(topic: str, payload: bytes) -> Rejection:
    """A retained data message: readings are published without retain, or replayed."""
    parsed = parse_topic(topic)
    if isinstance(parsed, Rejection):
        return parsed
    return Rejection(
        "retained",
        "the broker's retained copy of a data message; publish readings with retain off",
        parsed.family,
        parsed.device,
        payload=_raw_preview(payload),
    )


def reading_line(reading: Reading, registry: Registry) -> str:
    """The line-protocol line for a reading, placed by the registry in force."""
    placement = registry.placement(reading.device)
    fields = dict(reading.fields)
    fields.update(PLUGINS[reading.family].derived(reading.fields, placement.capacity))
    if reading.seq is not None:
        fields["seq"] = reading.seq
    return encode_line(reading.family, placement.tags, fields, reading.ts_ms)


def status_line(device: str, online: bool, ts_ms: int, registry: Registry) -> str:
    placement = registry.placement(device)
    return encode_line(
        STATUS_MEASUREMENT,
        placement.tags,
        {"online": int(online), "state": "online" if online else "offline"},
        ts_ms,
    )

"""The common case, fast: well-formed data messages to lines and readings without pydantic.

At tens of thousands of messages a second, pydantic validation and the general line
encoder cost more than the rest of the pipeline together (``bench/stages.py``). Nearly
every message is a well-formed reading from a device already seen, so ``FastDecoder``
accepts exactly those with plain type and range checks, and writes their lines from a
measurement-and-tags prefix kept per topic. Anything it is not sure of (a string ``ts``,
a missing, extra-typed or out-of-range field, a bool, a device claim, bad JSON, an
unknown topic) goes to ``Decoder``, which is the definition of the protocol: it gives
the same answer for valid input and names the reason for invalid input.

So the fast path never rejects anything on its own. New series pass the decoder's
admission (collector/admission.py) on both paths alike: a reading naming only admitted
quantities, or new ones no cap refuses (a device's first reading), keeps its fast line;
any other goes through the same ``admit`` call the slow path makes.
``tests/test_fastpath.py`` checks
the one property that matters: whenever the fast path accepts an object, the slow path
accepts it with the same reading and the same line.

The per-topic cache belongs to one registry snapshot (a reload starts a new one) and is
bounded: past ``MAX_ROUTES`` topics (a flood of made-up ids) it is dropped whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from collector.families import PLUGINS
from collector.families.base import FastEncoder, FastResult, Route
from collector.lineprotocol import escape_measurement
from collector.protocol import (
    PAYLOAD_MODELS,
    Decoder,
    Reading,
    Rejection,
    parse_topic,
    reading_line,
)
from collector.registry import Registry

MAX_ROUTES = 100_000

# Each family's encoder lives in its plug-in (collector/families/), required there.
FAST_ENCODERS: Mapping[str, FastEncoder] = {name: family.encode for name, family in PLUGINS.items()}
MEASUREMENTS: Mapping[str, str] = {name: escape_measurement(name) for name in PLUGINS}


def route_for(topic: str, registry: Registry) -> Route | None:
    """The route of a valid data topic whose device the registry does not place elsewhere."""
    parsed = parse_topic(topic)
    if isinstance(parsed, Rejection) or parsed.kind != "data":
        return None
    placement = registry.placement(parsed.device)
    if placement.family is not None and placement.family != parsed.family:
        return None
    head = MEASUREMENTS[parsed.family]
    prefix = f"{head},{placement.tags} " if placement.tags else f"{head} "
    return (parsed.family, parsed.device, placement.capacity, prefix)


def _all_admitted(admitted: set[str] | None, reading: Reading) -> bool:
    return admitted is not None and admitted.issuperset(reading.fields)


@dataclass(slots=True)
class Encoded:
    """A message's readings with their lines (same order), and its rejections."""

    readings: list[Reading]
    rejections: list[Rejection]
    lines: list[str]


class FastDecoder:
    """``Decoder.decode`` plus each reading's line, fast for well-formed messages."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self._routes: dict[str, Route] = {}
        self._routes_for: Registry | None = None
        self.fast = 0  # readings that took the fast path
        self.slow = 0  # objects the slow path judged
        # What ``plain`` reads for every message, looked up once: the limits are frozen,
        # and the admission's table of admitted quantities is one dict for its life.
        limits = decoder.limits
        self._max_payload_bytes = limits.max_payload_bytes
        self._max_age_ms, self._max_future_ms = limits.max_age_ms, limits.max_future_ms
        self._admission = admission = decoder.admission
        self._admitted = admission.admitted_by_device if admission is not None else None

    def routes(self, registry: Registry) -> Mapping[str, Route]:
        """The routes known for ``registry``'s snapshot, by topic: a hit needs no
        ``route`` call (a miss does, and adds it here)."""
        if self._routes_for is not registry:
            self._routes, self._routes_for = {}, registry
        return self._routes

    def route(self, topic: str, registry: Registry) -> Route | None:
        route = self.routes(registry).get(topic)
        if route is None:
            route = route_for(topic, registry)
            if route is None:
                return None
            if len(self._routes) >= MAX_ROUTES:
                self._routes.clear()
            self._routes[topic] = route
        return route

    def device(self, topic: str, registry: Registry) -> str:
        """The device a data topic names ("" for a topic too short to name one)."""
        route = self.route(topic, registry)
        if route is not None:
            return route[1]
        return topic.split("/", 4)[3] if topic.count("/") >= 4 else ""

    def plain(
        self, route: Route, payload: bytes, received_ms: int, registry: Registry
    ) -> FastResult:
        """The reading and line of a message holding one plain reading on a routed topic
        whose quantities are all admitted, or are admitted now without a cap refusing
        any; None for anything else, which ``decode`` answers (the common case without
        an ``Encoded`` per message)."""
        if len(payload) > self._max_payload_bytes:
            return None
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if type(data) is not dict:
            return None
        done = FAST_ENCODERS[route[0]](
            data,
            route,
            received_ms,
            received_ms - self._max_age_ms,
            received_ms + self._max_future_ms,
        )
        if done is None:
            return None
        admitted = self._admitted
        if admitted is not None:
            names = admitted.get(route[1])
            if names is None or not names.issuperset(done[0].fields):
                assert self._admission is not None
                if not self._admission.admit_all(route[1], done[0].fields, registry):
                    return None  # a cap refuses a quantity: ``decode`` says which
        self.fast += 1
        return done

    def decode(
        self, topic: str, payload: bytes, received_ms: int, registry: Registry
    ) -> Encoded | Rejection:
        route = self.route(topic, registry)
        if route is None:
            return self._slow(topic, payload, received_ms, registry)
        limits = self.decoder.limits
        if len(payload) > limits.max_payload_bytes:
            return self._slow(topic, payload, received_ms, registry)
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return self._slow(topic, payload, received_ms, registry)
        family, device = route[0], route[1]
        encode = FAST_ENCODERS[family]
        oldest, newest = received_ms - limits.max_age_ms, received_ms + limits.max_future_ms
        admission = self.decoder.admission
        if type(data) is dict:
            done = encode(data, route, received_ms, oldest, newest)
            if done is None:
                return self._slow(topic, payload, received_ms, registry)
            self.fast += 1
            if admission is None or _all_admitted(admission.admitted(device), done[0]):
                return Encoded([done[0]], [], [done[1]])
            out = Encoded([], [], [])
            self._admit(done[0], done[1], out, registry, index=None, obj=data)
            return out
        if type(data) is not list or not 0 < len(data) <= limits.max_objects_per_message:
            return self._slow(topic, payload, received_ms, registry)
        out = Encoded([], [], [])
        model = PAYLOAD_MODELS[family]
        admitted = admission.admitted(device) if admission is not None else None
        for index, obj in enumerate(data):
            done = encode(obj, route, received_ms, oldest, newest) if type(obj) is dict else None
            if done is not None:
                self.fast += 1
                if admission is None or _all_admitted(admitted, done[0]):
                    out.readings.append(done[0])
                    out.lines.append(done[1])
                else:
                    self._admit(done[0], done[1], out, registry, index=index, obj=obj)
                    admitted = admission.admitted(device)
                continue
            self.slow += 1
            judged = self.decoder.reading(model, obj, family, device, received_ms)
            if isinstance(judged, Rejection):
                judged.index, judged.payload = index, obj
                out.rejections.append(judged)
            elif admission is None:
                out.readings.append(judged)
                out.lines.append(reading_line(judged, registry))
            else:
                self._admit(judged, None, out, registry, index=index, obj=obj)
                admitted = admission.admitted(device)
        return out

    def _admit(
        self,
        reading: Reading,
        line: str | None,
        out: Encoded,
        registry: Registry,
        *,
        index: int | None,
        obj: Any,
    ) -> None:
        """Add a reading to ``out`` as ``Decoder.decode`` would under the admission."""
        assert self.decoder.admission is not None
        admitted, refused = self.decoder.admission.admit(reading, registry)
        if refused is not None:
            refused.index, refused.payload = index, obj
            out.rejections.append(refused)
        if admitted is not None:
            if admitted is not reading or line is None:  # fewer fields: another line
                line = reading_line(admitted, registry)
            out.readings.append(admitted)
            out.lines.append(line)

    def _slow(
        self, topic: str, payload: bytes, received_ms: int, registry: Registry
    ) -> Encoded | Rejection:
        self.slow += 1
        result = self.decoder.decode(topic, payload, received_ms, registry)
        if isinstance(result, Rejection):
            return result
        lines = [reading_line(reading, registry) for reading in result.readings]
        return Encoded(result.readings, result.rejections, lines)

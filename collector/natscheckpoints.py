"""Each partition's detector state, checkpointed in the NATS cluster for its next owner.

A collector that reads a partition (``collector.natsleases``) writes the state of the
partition's series (``collector.partitionstate``) with the stream position it belongs to
into the JetStream object store ``smartunit_detector_state``, one object per partition,
replicated like the message stream:

- every ``nats.checkpoint_interval_s``, and within a tenth of a second after the
  detectors decided something (those partitions that judged readings since their last
  checkpoint) (a level raised or cleared must not be decided again by the next
  owner);
- when it gives a partition back (a clean stop, another member's share), before the
  lease is released, so the next owner finds the newest state.

A collector that gains a partition restores its checkpoint before it fetches. The
messages after the checkpoint's position come again (unacknowledged ones) and are
judged; those its series have already judged are older than their newest judged reading
and are stored but not judged again (``DetectionEngine.process``).

A write cut short (its deadline, a lost connection, a stop) leaves the chunks it sent
with no object naming them; nats-py purges them only on an ordinary error, not on a
cancellation. Every ``sweep_interval_s`` each collector purges the chunk subjects that no
object named at its previous sweep either, unchanged since: a write in progress finishes
or is cut well within that time, so only abandoned chunks go (``orphans_purged``).

Why JetStream and not PostgreSQL: the state belongs to the stream's positions, lives in
the same replicated store as the messages and the leases, is written every few seconds
by every instance, and can be megabytes for a busy partition (the object store chunks
it); the alert store stays small and off the readings' path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.object_store import ObjectStore

from collector.detecting import DetectionRuntime
from collector.natssubjects import device_token, partition_of
from collector.partitionstate import extract, forget, implant

log = logging.getLogger(__name__)

BUCKET = "smartunit_detector_state"
URGENT_S = 0.1  # how soon after a decision the partitions are checkpointed
URGENT_WINDOW_S = 2.0  # and for how long after it, as its readings are acknowledged
_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError)
STREAM = f"OBJ_{BUCKET}"  # the object store's own stream, named by nats-py
CHUNKS = f"$O.{BUCKET}.C."  # + an object's nuid: the subject of its chunks
METAS = f"$O.{BUCKET}.M."  # + its encoded name: the subject of its description


class PartitionCheckpoints:
    def __init__(
        self,
        detection: DetectionRuntime,
        *,
        partitions: int,
        interval_s: float,
        replicas: int,
        deadline_s: float,
    ) -> None:
        self.detection = detection
        self.partitions = partitions
        self.interval_s = interval_s
        self.replicas = replicas
        # A checkpoint read or written past this is given up (counted, logged): the
        # object store's reads wait without end for chunks that never come, and the
        # partition's lease must be renewed meanwhile.
        self.deadline_s = deadline_s
        self.saved = 0  # checkpoints written
        self.restored = 0  # checkpoints restored on taking a partition over
        self.failures = 0
        self._store: ObjectStore | None = None
        self._saved_at: dict[int, float] = {}
        self._saved_position: dict[int, int] = {}
        self._decisions_seen = 0
        self._urgent_until = 0.0
        # A write lasts at most deadline_s: chunks nobody named over a longer time were
        # abandoned.
        self.sweep_interval_s = max(6 * interval_s, 10 * deadline_s)
        self.orphans_purged = 0  # chunk subjects of cut writes purged
        self._js: JetStreamContext | None = None
        self._unnamed: dict[str, int] = {}  # chunk subject -> its message count, last sweep
        self._swept_at = time.monotonic()

    def metrics(self) -> dict[str, int]:
        """The checkpoints' families of /metrics."""
        return {
            "partition_checkpoints_written_total": self.saved,
            "partition_checkpoints_restored_total": self.restored,
            "partition_checkpoint_failures_total": self.failures,
            "partition_checkpoint_orphans_purged_total": self.orphans_purged,
        }

    async def open(self, js: JetStreamContext) -> None:
        self._js = js
        try:
            self._store = await js.object_store(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            self._store = await js.create_object_store(
                BUCKET,
                config=ObjectStoreConfig(
                    bucket=BUCKET, replicas=self.replicas, storage=StorageType.FILE
                ),
            )

    def devices_of(self, partition: int) -> list[str]:
        engine = self.detection.engine
        if engine is None:
            return []
        return [
            device
            for device in engine.series.device_names
            if partition_of(device_token(device), self.partitions) == partition
        ]

    async def save(self, partition: int, position: int) -> bool:
        """Checkpoint a partition's series at stream position ``position``."""
        engine, store = self.detection.engine, self._store
        if engine is None or store is None:
            return False
        data = extract(engine, self.devices_of(partition), position=position)
        try:
            async with asyncio.timeout(self.deadline_s):
                await store.put(f"p{partition}", data)
        except _NATS_ERRORS as exc:
            self.failures += 1
            log.warning("partition checkpoint not written: %s", exc, extra={"partition": partition})
            return False
        self.saved += 1
        self._saved_at[partition] = time.monotonic()
        self._saved_position[partition] = position
        return True

    async def restore(self, partition: int) -> int | None:
        """Take a partition's checkpoint into the engine; its stream position (None: none)."""
        engine, store = self.detection.engine, self._store
        if engine is None or store is None:
            return None
        try:
            async with asyncio.timeout(self.deadline_s):
                found = await store.get(f"p{partition}")
        except nats.js.errors.ObjectNotFoundError:
            return None
        except _NATS_ERRORS as exc:
            self.failures += 1
            log.warning("partition checkpoint not read: %s", exc, extra={"partition": partition})
            return None
        if found.data is None:
            return None
        try:
            series, position = implant(engine, found.data)
        except (ValueError, KeyError, OSError) as exc:  # damaged: judged from what we know
            log.error(
                "partition checkpoint cannot be used: %s", exc, extra={"partition": partition}
            )
            return None
        self.restored += 1
        self._saved_at[partition] = time.monotonic()
        log.info(
            "partition detector state restored",
            extra={"partition": partition, "series": series, "position": position},
        )
        return position

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions another instance reads now: their devices' silence is its to watch."""
        engine = self.detection.engine
        for partition in partitions:
            self._saved_at.pop(partition, None)
            self._saved_position.pop(partition, None)
            if engine is not None:
                forget(engine, self.devices_of(partition))

    async def sweep(self) -> int:
        """Purge the chunk subjects named by no object now nor at the previous sweep, with
        as many messages then as now; how many were purged."""
        js = self._js
        if js is None:
            return 0
        chunks = await self._subjects(js, CHUNKS)
        named = set()
        for meta in await self._subjects(js, METAS):
            found = await js.get_last_msg(STREAM, meta)
            named.add(CHUNKS + json.loads(found.data or b"{}")["nuid"])
        unnamed = {subject: n for subject, n in chunks.items() if subject not in named}
        orphans = [s for s, n in unnamed.items() if self._unnamed.get(s) == n]
        for subject in orphans:
            await js.purge_stream(STREAM, subject=subject)
            del unnamed[subject]
        self._unnamed = unnamed
        if orphans:
            self.orphans_purged += len(orphans)
            log.info("checkpoint chunks of cut writes purged", extra={"subjects": len(orphans)})
        return len(orphans)

    @staticmethod
    async def _subjects(js: JetStreamContext, prefix: str) -> dict[str, int]:
        """The stream's subjects under ``prefix``, with their message counts."""
        info = await js.stream_info(STREAM, subjects_filter=prefix + ">")
        return info.state.subjects or {}

    async def _sweep_when_due(self) -> None:
        now = time.monotonic()
        if now - self._swept_at < self.sweep_interval_s:
            return
        self._swept_at = now
        try:
            async with asyncio.timeout(self.deadline_s):
                await self.sweep()
        except (*_NATS_ERRORS, KeyError, ValueError) as exc:
            # what the previous sweep saw stays: a subject is purged only when two sweeps
            # that completed agree it is abandoned
            log.warning("checkpoint chunks not swept: %s", exc)

    async def keep(self, owned: Callable[[], dict[int, int]]) -> None:
        """Checkpoint the partitions read (``owned``: partition -> stream position) every
        ``interval_s``, and all of them soon after the detectors decided something."""
        while True:
            await asyncio.sleep(URGENT_S)
            decisions = sum(self.detection.stats.detections.values())
            now = time.monotonic()
            if decisions != self._decisions_seen:
                # the decision's readings are acknowledged (the position moves) once
                # stored: watch for a while
                self._decisions_seen, self._urgent_until = decisions, now + URGENT_WINDOW_S
            urgent = now < self._urgent_until
            due = now - self.interval_s
            for partition, position in owned().items():
                moved = position != self._saved_position.get(partition)
                if (urgent and moved) or self._saved_at.get(partition, 0.0) <= due:
                    await self.save(partition, position)
            await self._sweep_when_due()

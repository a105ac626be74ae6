"""A partition's detector state goes with the partition: the collector that takes a
partition over goes on judging its series where the previous owner stopped."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import nats
import nats.js.errors
from nats.js.api import ObjectStoreConfig, StorageType

from collector.config import InfluxSettings, Settings
from collector.natscheckpoints import BUCKET as CHECKPOINTS
from collector.natsleases import share
from collector.natssubjects import device_token, partition_of
from fieldtools.localservices import InfluxDB
from fieldtools.natscluster import NatsCluster
from tests.conftest import CollectorThread, influx_rows, poll
from tests.natsfixtures import Device, reading, run_async
from tests.test_nats_ownership import owners

# readings the cameras' statistical chain has seen, by the chain's own series numbers
READINGS_COUNT = "chain|camera/detector.raw.n"


def readings_seen(collector: CollectorThread, device: str) -> float:
    engine = collector.collector.engine if collector.collector is not None else None
    if engine is None or device not in engine.series.devices:
        return 0.0
    series = engine.series.devices[device][1].get("people", -1)
    if not 0 <= series < len(engine.chain._local):
        return 0.0
    series = int(engine.chain._local[series])
    state = engine.snapshot()[READINGS_COUNT]
    return float(state[series]) if 0 <= series < len(state) else 0.0


def late_readings(collector: CollectorThread) -> tuple[int, int]:
    assert collector.collector is not None and collector.collector.engine is not None
    source: Any = collector.collector.source
    return collector.collector.engine.late_readings, source.redelivered


def test_a_partition_taken_over_keeps_its_series_detector_state(
    nats_cluster: NatsCluster,
    nats_settings: Callable[..., Settings],
    influxdb: InfluxDB,
    database: str,
    run_collector: Callable[..., CollectorThread],
) -> None:
    def collector(name: str) -> CollectorThread:
        settings = nats_settings(name)
        # no warm start from InfluxDB history: what the second knows came with the
        # partition; a device is silent after 8 s without readings
        silence = settings.detection.silence.model_copy(
            update={"check_interval_s": 0.5, "minimum_s": 8.0, "allowance_s": 0.0}
        )
        detection = settings.detection.model_copy(
            update={"warm_start_hours": 0.0, "silence": silence}
        )
        return run_collector(settings.model_copy(update={"detection": detection}))

    first_id, second_id = f"first-{database}", f"second-{database}"
    partitions = nats_cluster.partitions
    moving = share([first_id, second_id], partitions)
    device_id = next(
        name
        for name in (f"cam-{index}" for index in range(1000))
        if moving[partition_of(device_token(name), partitions)] == second_id
    )
    partition = partition_of(device_token(device_id), partitions)
    device = Device(nats_cluster.nodes[0].mqtt_port, family="camera", device_id=device_id)
    acked: list[int] = []
    stop = threading.Event()

    def publish() -> None:  # a reading every 0.2 s, timestamped as sent
        seq = 0
        while not stop.is_set():
            body = {"ts": time.time(), "seq": seq, "people": 10 + seq % 4}
            if device.publish(json.dumps(body).encode()):
                acked.append(seq)
            seq += 1
            time.sleep(0.2)

    publisher = threading.Thread(target=publish, daemon=True)
    try:
        first = collector("first")
        poll(
            lambda: owners(nats_cluster),
            lambda found: len(found) == partitions and set(found.values()) == {first_id},
            60,
        )
        publisher.start()
        poll(lambda: readings_seen(first, device_id), lambda n: n >= 20, 60)

        second = collector("second")  # its share includes the device's partition
        poll(lambda: owners(nats_cluster).get(partition), lambda owner: owner == second_id, 60)
        taken_over_with = poll(lambda: readings_seen(second, device_id), lambda n: n >= 1, 60)
        # longer than the silence timeout: the first, which read the device before, does
        # not take it for silent while it reports to the second
        time.sleep(12)
        stop.set()
        publisher.join(10)
        stopped_ms = int(time.time() * 1000)
        second.wait_received(0)
        seen = poll(lambda: readings_seen(second, device_id), lambda n: n >= len(acked), 30)
        assert taken_over_with > 1 and seen == len(acked), (
            f"{len(acked)} readings, {seen} in the new owner's state: started cold or judged "
            f"twice; late: {[late_readings(c) for c in (first, second)]}"
        )
        influx = InfluxSettings(url=influxdb.url, database=database)
        silent = influx_rows(
            influx,
            f'SELECT * FROM "detections" WHERE "device" = \'{device_id}\' '
            f"AND \"detector\" = 'silence' AND time < {stopped_ms}ms",
        )
        assert not silent, f"a device read by another instance was taken for silent: {silent}"
    finally:
        device.close()


def test_a_checkpoint_whose_chunks_never_come_costs_no_partition(
    nats_cluster: NatsCluster,
    nats_settings: Callable[..., Settings],
    run_collector: Callable[..., CollectorThread],
) -> None:
    """The object store's read waits without end for the chunks of an object whose chunks
    are gone (a purged or damaged store): the partition is read all the same, judged from
    what the collector knows, and the failure counted."""
    settings = nats_settings()

    async def damage_every_checkpoint() -> None:
        nc = await nats.connect(nats_cluster.urls.split(","))
        try:
            js = nc.jetstream()
            store = await js.create_object_store(
                CHECKPOINTS,
                config=ObjectStoreConfig(
                    bucket=CHECKPOINTS,
                    replicas=settings.nats.stream_replicas,
                    storage=StorageType.FILE,
                ),
            )
            for partition in range(nats_cluster.partitions):
                info = await store.put(f"p{partition}", b"state" * 1000)
                await js.purge_stream(
                    f"OBJ_{CHECKPOINTS}", subject=f"$O.{CHECKPOINTS}.C.{info.nuid}"
                )
        finally:
            await nc.close()

    run_async(damage_every_checkpoint())
    collector = run_collector(settings)
    device = Device(nats_cluster.nodes[0].mqtt_port, family="camera", device_id="cam-lost-state")
    try:
        assert device.publish(reading(1))
    finally:
        device.close()
    rows = poll(
        lambda: influx_rows(
            settings.influx, """SELECT "seq" FROM "camera" WHERE "device" = 'cam-lost-state'"""
        ),
        bool,
        30,
    )
    assert [row["seq"] for row in rows] == [1]
    source: Any = collector.collector.source if collector.collector is not None else None
    assert source is not None and source.checkpoints.failures >= 1


def checkpoint_chunks(urls: str) -> tuple[set[str], dict[str, int]]:
    """The chunk subjects the checkpoints name, and every chunk subject with its count."""

    async def read() -> tuple[set[str], dict[str, int]]:
        nc = await nats.connect(urls.split(","))
        try:
            js = nc.jetstream()
            try:
                store = await js.object_store(CHECKPOINTS)
                named = {f"$O.{CHECKPOINTS}.C.{info.nuid}" for info in await store.list()}
            except nats.js.errors.NotFoundError:  # no bucket or no object yet
                return set(), {}
            info = await js.stream_info(
                f"OBJ_{CHECKPOINTS}", subjects_filter=f"$O.{CHECKPOINTS}.C.>"
            )
            return named, info.state.subjects or {}
        finally:
            await nc.close()

    return run_async(read())


def test_the_chunks_of_a_cut_checkpoint_write_are_purged_and_every_checkpoint_kept(
    nats_cluster: NatsCluster,
    nats_settings: Callable[..., Settings],
    run_collector: Callable[..., CollectorThread],
) -> None:
    """A checkpoint write cut short (its deadline, a lost connection) leaves the chunks it
    sent with no object naming them, and nats-py purges them only on an ordinary error,
    not on a cancellation: without a sweep, each cut write's chunks stay for good."""
    # checkpoints every 0.3 s and a write deadline of 0.5 s: a sweep every 5 s
    settings = nats_settings(checkpoint_interval_s=0.3, lease_ttl_s=1.5)
    collector = run_collector(settings)
    partitions = nats_cluster.partitions
    assert poll(lambda: len(checkpoint_chunks(nats_cluster.urls)[0]), partitions.__eq__, 60)

    class CutAfterChunks(io.RawIOBase):
        """Checkpoint data whose write is cancelled, as a deadline cancels it, once three
        chunks are sent."""

        chunks = 0

        def readinto(self, buffer: Any) -> int:
            if self.chunks == 3:
                raise asyncio.CancelledError
            self.chunks += 1
            buffer[:] = b"x" * len(buffer)
            return len(buffer)

    async def cut_write() -> None:
        nc = await nats.connect(nats_cluster.urls.split(","))
        try:
            store = await nc.jetstream().object_store(CHECKPOINTS)
            with contextlib.suppress(asyncio.CancelledError):
                await store.put("p0", CutAfterChunks())  # type: ignore[arg-type]
        finally:
            await nc.close()

    run_async(cut_write())
    named, chunks = checkpoint_chunks(nats_cluster.urls)
    cut = {subject for subject, count in chunks.items() if subject not in named and count == 3}
    assert cut, f"the cut write left no chunks of its own: {chunks}"

    def purged() -> bool:
        named, chunks = checkpoint_chunks(nats_cluster.urls)
        return not cut & set(chunks) and named <= set(chunks)

    assert poll(purged, bool, 60), "the cut write's chunks are still in the store"
    assert collector.collector is not None
    counted = collector.collector.metrics()
    orphans_purged, written = (
        counted[f"partition_checkpoint{name}_total"] for name in ("_orphans_purged", "s_written")
    )
    assert isinstance(orphans_purged, int) and orphans_purged >= 1
    assert isinstance(written, int) and written >= partitions

    async def read_every_checkpoint() -> list[int]:
        nc = await nats.connect(nats_cluster.urls.split(","))
        try:
            store = await nc.jetstream().object_store(CHECKPOINTS)
            return [
                len((await asyncio.wait_for(store.get(f"p{p}"), 10)).data or b"")
                for p in range(partitions)
            ]
        finally:
            await nc.close()

    assert all(run_async(read_every_checkpoint()))  # each still whole: its digest is checked

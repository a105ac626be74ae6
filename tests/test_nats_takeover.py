"""A partition's detector state goes with the partition: the collector that takes a
partition over goes on judging its series where the previous owner stopped."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from collector.natsleases import share
from collector.natssubjects import device_token, partition_of
from fieldtools.localservices import InfluxDB, NatsCluster
from tests.conftest import CollectorThread, poll
from tests.natsfixtures import Device, nats_collector_settings
from tests.test_nats_ownership import owners

READINGS_COUNT = "chain|detector.raw.n"  # readings the statistical chain has seen


def readings_seen(collector: CollectorThread, device: str) -> float:
    engine = collector.collector.engine if collector.collector is not None else None
    if engine is None or device not in engine.series.devices:
        return 0.0
    series = engine.series.devices[device][1].get("people", -1)
    state = engine.snapshot()[READINGS_COUNT]
    return float(state[series]) if 0 <= series < len(state) else 0.0


def test_a_partition_taken_over_keeps_its_series_detector_state(
    nats_cluster: NatsCluster,
    influxdb: InfluxDB,
    database: str,
    tmp_path: Path,
    run_collector: Callable[..., CollectorThread],
) -> None:
    def collector(name: str) -> CollectorThread:
        settings = nats_collector_settings(
            nats_cluster,
            influx_url=influxdb.url,
            database=database,
            data_dir=tmp_path / name,
            client_id=f"{name}-{database}",
        )
        # no warm start from InfluxDB history: what the second knows came with the partition
        detection = settings.detection.model_copy(update={"warm_start_hours": 0.0})
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
    start = time.time() - 600

    def publish(seqs: range) -> None:
        for seq in seqs:
            body = {"ts": start + seq, "seq": seq, "people": 10 + seq % 4}
            assert device.publish(json.dumps(body).encode())

    try:
        first = collector("first")
        poll(
            lambda: owners(nats_cluster),
            lambda found: len(found) == partitions and set(found.values()) == {first_id},
            60,
        )
        publish(range(40))
        seen = poll(lambda: readings_seen(first, device_id), lambda n: n >= 40, 60)
        assert seen == 40

        second = collector("second")  # its share includes the device's partition
        poll(lambda: owners(nats_cluster).get(partition), lambda owner: owner == second_id, 60)
        publish(range(40, 50))
        seen = poll(lambda: readings_seen(second, device_id), lambda n: n >= 10, 60)
        time.sleep(1)  # any reading judged twice would show by now
        assert readings_seen(second, device_id) == 50, "the series started cold on its new owner"
        engine = second.collector.engine if second.collector else None
        assert engine is not None
        assert np.isfinite(engine.snapshot()["newest"]).any()
    finally:
        device.close()

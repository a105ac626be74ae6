"""A NATS node dies under load: the collector keeps reading from the others, the devices
on the dead node reconnect once it is back, and no acknowledged reading is lost."""

from __future__ import annotations

from collections.abc import Callable

from collector.config import Settings
from fieldtools.natscluster import NatsCluster
from tests.conftest import CollectorThread, poll
from tests.natsfixtures import (
    Load,
    assert_every_acknowledged_reading_stored,
)

DEVICES = 9


def test_sigkill_of_a_nats_node_under_load_loses_nothing(
    nats_cluster: NatsCluster,
    nats_settings: Callable[..., Settings],
    run_collector: Callable[..., CollectorThread],
) -> None:
    settings = nats_settings()
    collector = run_collector(settings)  # its MQTT session is on the first node
    load = Load(nats_cluster, DEVICES)  # a third of the devices on each node
    try:
        poll(load.count, lambda n: n >= DEVICES * 20, 60)
        victim = nats_cluster.nodes[1]
        nats_cluster.kill(victim)
        before = load.count()
        # the devices on the other nodes keep being acknowledged meanwhile
        assert poll(load.count, lambda n: n >= before + DEVICES * 10, 60) >= before + DEVICES * 10
        nats_cluster.restart(victim)
        on_victim = [d.device_id for d in load.devices if d.port == victim.mqtt_port]
        counts = {device: len(load.acked[device]) for device in on_victim}
        assert poll(
            lambda: all(len(load.acked[d]) >= counts[d] + 10 for d in on_victim), bool, 90
        ), "the devices of the killed node did not publish again after it came back"
    finally:
        load.stop()
    assert_every_acknowledged_reading_stored(load, settings.influx)
    assert collector.collector is not None

"""A partition's continuous pull (collector/natspull.py) on a real NATS server: a
partition given up leaves no request at the server to capture what is published next."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from collector.config import NatsSettings
from collector.natspull import PartitionPuller
from collector.natsstream import consumer_name, provision
from collector.natssubjects import MQTT_MESSAGES_STREAM
from fieldtools.natscluster import NatsCluster
from tests.natsfixtures import Device, run_async, wait_true

ACK_WAIT_S = 300.0  # far beyond the tests' waits: nothing comes back by redelivery


class Inbox:
    """What a NatsSource keeps for its pullers: messages held, requests open, a bound."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.held: list[Msg] = []
        self.requested = 0
        self.most_requested = 0

    def room(self) -> int:
        return self.bound - len(self.held) - self.requested

    def reserve(self, count: int) -> None:
        self.requested += count
        self.most_requested = max(self.most_requested, self.requested)
        assert self.requested >= 0

    def puller(self, nc: NatsClient, settings: NatsSettings, expires_s: float) -> PartitionPuller:
        return PartitionPuller(
            nc,
            stream=MQTT_MESSAGES_STREAM,
            consumer=consumer_name(settings, 0),
            batch=4,
            expires_s=expires_s,
            room=self.room,
            reserve=self.reserve,
            admit=self.held.extend,
        )


def _settings(cluster: NatsCluster) -> NatsSettings:
    return NatsSettings(
        url=cluster.urls, partitions=1, stream_replicas=cluster.replicas, ack_wait_s=ACK_WAIT_S
    )


async def _connected(cluster: NatsCluster) -> NatsClient:
    nc = await nats.connect(cluster.urls.split(","))
    await provision(nc.jetstream(), _settings(cluster))
    return nc


async def _until(check: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    return await asyncio.to_thread(wait_true, check, timeout_s)


def test_a_partition_given_up_leaves_no_request_to_capture_the_next_message(
    start_nats: Callable[..., NatsCluster],
) -> None:
    cluster = start_nats(size=1, partitions=1)
    device = Device(cluster.nodes[0].mqtt_port)

    async def scenario() -> list[bytes]:
        nc = await _connected(cluster)
        old_owner, new_owner = Inbox(bound=100), Inbox(bound=100)
        # a request open far longer than the test waits for the message
        giving_up = asyncio.create_task(old_owner.puller(nc, _settings(cluster), 60.0).run())
        taking_over: asyncio.Task[None] | None = None
        try:
            await asyncio.sleep(1.0)  # its request is at the server
            giving_up.cancel()
            await asyncio.gather(giving_up, return_exceptions=True)
            assert await asyncio.to_thread(device.publish, b"after the hand-over")
            new = new_owner.puller(nc, _settings(cluster), 60.0)
            taking_over = asyncio.create_task(new.run())
            await _until(lambda: bool(new_owner.held))
            assert not old_owner.held
            return [msg.data for msg in new_owner.held]
        finally:
            for task in (giving_up, taking_over):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            await nc.close()

    assert run_async(scenario()) == [b"after the hand-over"]
    device.close()

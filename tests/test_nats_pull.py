"""A partition's continuous pull (collector/natspull.py) on a real NATS server: a
partition given up leaves no request at the server to capture what is published next."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from collector.config import NatsSettings
from collector.natspull import PartitionPuller, delivery_of
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


class AcknowledgingInbox(Inbox):
    """An inbox whose owner takes out what it holds once it is full, as the writer's
    acknowledgements would, and measures held + requested at every change of the
    reservation (an arrival is admitted, then its reservation given back, in one step of
    the event loop: between the two it is counted twice, and nothing else runs)."""

    def __init__(self, bound: int) -> None:
        super().__init__(bound)
        self.taken: list[bytes] = []
        self.most_owed = 0  # held + requested, at its highest
        self.puller_wake: Callable[[], None] = lambda: None

    def reserve(self, count: int) -> None:
        super().reserve(count)
        self.most_owed = max(self.most_owed, len(self.held) + self.requested)

    def take_when_full(self) -> bool:
        if len(self.held) < self.bound:
            return False
        self.taken += [msg.data for msg in self.held]
        self.held.clear()
        self.puller_wake()
        return True


def test_a_puller_never_holds_more_than_the_inbox_bound_fetched_and_requested(
    start_nats: Callable[..., NatsCluster],
) -> None:
    cluster = start_nats(size=1, partitions=1)
    device = Device(cluster.nodes[0].mqtt_port)
    bound, published = 10, [f"reading {n}".encode() for n in range(35)]

    async def scenario() -> AcknowledgingInbox:
        nc = await _connected(cluster)
        inbox = AcknowledgingInbox(bound)
        puller = PartitionPuller(
            nc,
            stream=MQTT_MESSAGES_STREAM,
            consumer=consumer_name(_settings(cluster), 0),
            batch=4,
            expires_s=60.0,
            room=inbox.room,
            reserve=inbox.reserve,
            admit=inbox.held.extend,
        )
        inbox.puller_wake = puller.wake
        pulling = asyncio.create_task(puller.run())

        async def until(check: Callable[[], bool]) -> None:
            # Stops early once the bound is passed (the assertions below say so).
            while not check() and inbox.most_owed <= bound and not pulling.done():
                await asyncio.sleep(0.05)

        try:
            for payload in published:
                assert await asyncio.to_thread(device.publish, payload)
            # Three full inboxes taken out; the last 5 stay, under the bound.
            for _ in range(3):
                await until(inbox.take_when_full)
            await until(lambda: len(inbox.held) >= len(published) - 3 * bound)
            return inbox
        finally:
            pulling.cancel()
            await asyncio.gather(pulling, return_exceptions=True)
            await nc.close()

    inbox = run_async(asyncio.wait_for(scenario(), 120))
    device.close()
    assert inbox.taken + [msg.data for msg in inbox.held] == published
    assert inbox.most_owed == bound


def test_a_puller_cancelled_as_it_is_woken_stops(
    start_nats: Callable[..., NatsCluster],
) -> None:
    """A partition given up cancels its puller; an acknowledgement or an arrival may wake
    the puller in the same turn of the event loop, and the cancellation must still win
    (a puller that went on would keep reading a partition another collector owns)."""
    cluster = start_nats(size=1, partitions=1)

    async def scenario() -> bool:
        nc = await _connected(cluster)
        inbox = Inbox(bound=100)
        puller = inbox.puller(nc, _settings(cluster), 60.0)
        pulling = asyncio.create_task(puller.run())
        try:
            while not puller.outstanding:  # its request is out: it waits to be woken
                await asyncio.sleep(0.05)
            puller.wake()
            pulling.cancel()
            for _ in range(300):
                if pulling.done():
                    break
                await asyncio.sleep(0.1)
            return pulling.done()
        finally:
            pulling.cancel()  # a puller that went on: stopped here for good
            await asyncio.wait({pulling}, timeout=5)
            await nc.close()

    assert run_async(scenario()), "the puller went on after it was cancelled"


def test_a_delivery_is_read_from_the_reply_subject_in_either_layout() -> None:
    assert delivery_of("$JS.ACK.$MQTT_msgs.smartunit-p3.2.1042.17.1764547200000000000.5") == (
        2,
        1042,
    )
    with_domain = "$JS.ACK.hub.ACCHASH.$MQTT_msgs.smartunit-p3.1.77.9.1764547200000000000.0"
    assert delivery_of(with_domain) == (1, 77)
    assert delivery_of(with_domain + ".RANDOM") == (1, 77)
    assert delivery_of("_INBOX.abc") == (1, 0)  # not a JetStream delivery: position kept
    assert delivery_of("$JS.ACK.short") == (1, 0)

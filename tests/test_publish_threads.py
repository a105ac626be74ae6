"""Publishing from the HTTP API's threads: alert events (and so a unit's retained state)
are published from whichever thread changed the alert, while the receiver lives on the
event loop."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import poll

THREADS = 4
MESSAGES = 1500


@pytest.mark.slow
@pytest.mark.parametrize("receiver", ["bulk", "paho"])
def test_publishes_from_other_threads_arrive_whole_and_in_order(
    receiver, make_settings, run_collector, subscribe
) -> None:
    settings = make_settings(mqtt={"receiver": receiver})
    collector = run_collector(settings)
    source = collector.collector.source
    received = subscribe("threads-test/#")
    disconnects = getattr(source, "disconnects", 0)

    def publish_from_a_thread(n: int) -> None:
        for seq in range(MESSAGES):
            source.publish(f"threads-test/{n}", str(seq).encode() + b" " * 20_000, qos=1)

    threads = [threading.Thread(target=publish_from_a_thread, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    expected = THREADS * MESSAGES
    poll(lambda: len(received.messages), lambda n: n >= expected, 60)
    per_thread: dict[str, list[int]] = {}
    for message in received.messages:
        per_thread.setdefault(message.topic, []).append(int(message.payload))
    assert {topic: len(seqs) for topic, seqs in per_thread.items()} == {
        f"threads-test/{n}": MESSAGES for n in range(THREADS)
    }
    for seqs in per_thread.values():
        assert seqs == list(range(MESSAGES))  # each thread's messages in its order
    assert getattr(source, "disconnects", 0) == disconnects  # the stream never broke
    collector.stop()

"""Webhook delivery to a real local HTTP receiver: signed, ordered, at least once."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from collector.alerts.dispatch import Dispatcher
from collector.alerts.lifecycle import AlertBook
from collector.alerts.notify import Notifier, verify_signature
from collector.alerts.store import SqliteAlertStore
from collector.config import ReceiverSettings
from collector.detection import DetectionEvent
from collector.detectionevent import EventKind
from tests.receivers import SECRET, WorkOrders


def gas(kind: EventKind, colour: str, at_ms: int, device: str) -> DetectionEvent:
    unit = f"unit-of-{device}"  # one alert per unit: no incident grouping in these tests
    return DetectionEvent(
        kind, "combustible-gas", device, "chem", "lel_pct", unit, colour, "green", 30.0, at_ms
    )


def make(
    tmp_path: Path, url: str, secret: str | None = SECRET, **settings: Any
) -> tuple[AlertBook, Dispatcher]:
    receiver = ReceiverSettings(
        name="work-orders", url=url, secret=secret, timeout_s=0.5, **settings
    )
    store = SqliteAlertStore(tmp_path / "alerts.db")
    book = AlertBook(store, router=Notifier([receiver], "http://console").route)
    return book, Dispatcher(store.outbox, [receiver], book, retry_initial_s=0.05, retry_max_s=0.2)


async def drain(dispatcher: Dispatcher, deadline_s: float = 20.0) -> None:
    """Run the dispatcher until nothing is pending (or the deadline), then stop it."""
    running = asyncio.create_task(dispatcher.run(interval_s=0.05))
    end = time.monotonic() + deadline_s
    while dispatcher.outbox.counts().get("pending") and time.monotonic() < end:
        await asyncio.sleep(0.05)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)


def test_a_receiver_down_for_a_while_gets_every_event_once_and_in_order(
    tmp_path: Path, receiver_url: str
) -> None:
    WorkOrders.failures_left, WorkOrders.hang_once = 6, True
    book, dispatcher = make(tmp_path, receiver_url)
    for device in ("gas-1", "gas-2"):
        (opened,) = book.on_detection(gas("raised", "orange", 0, device))
        book.on_detection(gas("changed", "red", 1000, device))
        book.acknowledge(opened.alert_id, actor="desk", now_ms=2000)
        book.resolve(opened.alert_id, actor="desk", note="fixed", now_ms=3000)

    asyncio.run(drain(dispatcher))
    asyncio.run(dispatcher.aclose())

    assert dispatcher.results["retried"] >= 6
    assert WorkOrders.bad_signatures == 0
    events = {}
    for message in WorkOrders.processed:
        assert message["version"] == "1"
        events.setdefault(message["alert"]["id"], []).append(message["event"])
    assert len(events) == 2
    for alert_id, received in events.items():
        stored = book.history(alert_id)
        # every event the alert had when delivery finished, each once, in order
        assert [e["id"] for e in received] == [e.id for e in stored]
        assert [e["seq"] for e in received] == list(range(1, len(stored) + 1))
    # acknowledged and resolved before the receiver was back: never "dispatched" (a work
    # order that is already handled needs no dispatch)
    assert {m["event"]["type"] for m in WorkOrders.processed} == {
        "opened",
        "colour_changed",
        "acknowledged",
        "resolved",
    }
    assert len(WorkOrders.keys_seen) == len(WorkOrders.processed)


def test_a_refusing_receiver_fills_the_dead_letter_list(tmp_path: Path, receiver_url: str) -> None:
    book, dispatcher = make(tmp_path, receiver_url, secret=None)  # unsigned: 401, for good
    book.on_detection(gas("raised", "orange", 0, "gas-3"))
    asyncio.run(drain(dispatcher))
    asyncio.run(dispatcher.aclose())
    assert dispatcher.outbox.counts() == {"dead": 1}
    assert WorkOrders.requests == 1  # not retried: a 4xx is final


def test_signatures_verify_and_tampering_is_caught() -> None:
    from collector.alerts.notify import sign

    body = b'{"version":"1"}'
    header = sign(SECRET, body, 1_800_000_000)
    assert verify_signature(SECRET, body, header, now=1_800_000_010)
    assert not verify_signature(SECRET, body + b" ", header, now=1_800_000_010)
    assert not verify_signature("other", body, header, now=1_800_000_010)
    assert not verify_signature(SECRET, body, header, now=1_800_001_000)  # replayed late


def test_the_first_delivery_marks_the_alert_dispatched(tmp_path: Path, receiver_url: str) -> None:
    book, dispatcher = make(tmp_path, receiver_url)
    (opened,) = book.on_detection(gas("raised", "orange", 0, "gas-4"))
    asyncio.run(drain(dispatcher))
    asyncio.run(dispatcher.aclose())
    alert = book.get(opened.alert_id)
    assert alert is not None and alert.state.value == "dispatched"
    history = [e.type.value for e in book.history(opened.alert_id)]
    assert history == ["opened", "dispatched"]
    assert history[-1] in [m["event"]["type"] for m in WorkOrders.processed]


def test_a_first_delivery_is_urgent_and_a_retry_is_not(tmp_path: Path, receiver_url: str) -> None:
    """While new events go out the collector decodes in short turns; retries do not slow it."""
    WorkOrders.failures_left = 1
    book, dispatcher = make(tmp_path, receiver_url)
    seen: list[bool] = []

    async def run() -> None:
        http = dispatcher.lanes["work-orders"].http
        post = http.post

        async def watched(*args: object, **kwargs: object) -> object:
            seen.append(dispatcher.urgent)
            return await post(*args, **kwargs)  # type: ignore[arg-type]

        http.post = watched  # type: ignore[method-assign,assignment]
        dispatcher._loop = asyncio.get_running_loop()
        book.on_detection(gas("raised", "orange", 0, "gas-5"))
        dispatcher.wake()
        await asyncio.sleep(0)
        assert dispatcher.urgent  # woken: events are on their way out
        await drain(dispatcher)
        assert not dispatcher.urgent
        await dispatcher.aclose()

    asyncio.run(run())
    # refused once, retried without urgency; the 'dispatched' event it caused is new
    assert seen == [True, False, True]


def test_events_for_a_receiver_no_longer_configured_go_to_the_dead_letter_list(
    tmp_path: Path, receiver_url: str
) -> None:
    book, dispatcher = make(tmp_path, receiver_url)
    book.on_detection(gas("raised", "orange", 0, "gas-6"))
    asyncio.run(dispatcher.aclose())
    other = ReceiverSettings(name="other", url=receiver_url, secret=SECRET)
    restarted = Dispatcher(dispatcher.outbox, [other], book)  # reconfigured, restarted
    asyncio.run(drain(restarted))
    asyncio.run(restarted.aclose())
    assert restarted.outbox.counts() == {"dead": 1}
    assert WorkOrders.requests == 0


def test_alertmanager_messages_carry_what_alertmanager_receivers_read(
    tmp_path: Path, receiver_url: str
) -> None:
    book, dispatcher = make(tmp_path, receiver_url, format="alertmanager")
    raised = dataclasses.replace(gas("raised", "red", 0, "gas-7"), value=55.0, threshold=50.0)
    (opened,) = book.on_detection(raised)
    book.on_detection(gas("cleared", "green", 1000, "gas-7"))  # normal again, by itself
    book.acknowledge(opened.alert_id, actor="desk", now_ms=2000)
    book.resolve(opened.alert_id, actor="desk", note="valve closed", now_ms=3000)
    book.on_detection(dataclasses.replace(raised, device="gas-8", unit="unit-of-gas-8"))
    asyncio.run(drain(dispatcher))
    asyncio.run(dispatcher.aclose())

    assert WorkOrders.bad_signatures == 0
    of_gas_7 = [m for m in WorkOrders.processed if m["alerts"][0]["labels"]["device"] == "gas-7"]
    steps = [(m["alerts"][0]["annotations"]["event_type"], m["status"]) for m in of_gas_7]
    # Firing until a person resolves it: recovering by itself does not stop the paging.
    assert steps == [
        ("opened", "firing"),
        ("recovered", "firing"),
        ("acknowledged", "firing"),
        ("resolved", "resolved"),
    ]
    for message in of_gas_7:
        assert message["version"] == "4" and len(message["alerts"]) == 1
        (alert,) = message["alerts"]
        assert alert["status"] == message["status"]
        assert alert["fingerprint"] == f"{opened.alert_id:016x}"  # one alert throughout
        assert message["groupKey"] == f'{{}}:{{alert_id="{opened.alert_id}"}}'
        labels, notes = alert["labels"], alert["annotations"]
        assert labels["severity"] == "critical" and labels["colour"] == "red"
        assert labels["alertname"] == "combustible-gas"
        assert labels["instance"] == labels["device"] == "gas-7"
        assert labels["event"] == "combustible-gas:lel_pct"
        assert labels["service"] == labels["unit"] == "unit-of-gas-7"
        assert labels["group"] == labels["family"] == "chem"
        assert notes["threshold"] == "50.0" and notes["quantity"] == "lel_pct"
        assert notes["console_url"] == f"http://console/alerts/{opened.alert_id}"
        assert alert["generatorURL"] == notes["console_url"]
        assert all(isinstance(text, str) for text in (*labels.values(), *notes.values()))
    first, recovered, acknowledged, resolved = (m["alerts"][0] for m in of_gas_7)
    assert first["annotations"]["value"] == "55.0"
    assert first["annotations"]["state"] == "open"
    assert first["annotations"]["condition"] == "active"
    assert first["endsAt"] == "0001-01-01T00:00:00Z"
    assert recovered["annotations"]["condition"] == "cleared"
    assert recovered["annotations"]["acknowledged"] == "false"
    assert acknowledged["annotations"]["state"] == "acknowledged"
    assert acknowledged["annotations"]["acknowledged"] == "true"
    assert acknowledged["annotations"]["actor"] == "desk"
    assert resolved["annotations"]["state"] == "resolved"
    assert resolved["annotations"]["note"] == "valve closed"
    assert resolved["endsAt"] != "0001-01-01T00:00:00Z"
    (other,) = [m for m in WorkOrders.processed if m not in of_gas_7 and m["status"] == "firing"][
        :1
    ]
    assert other["alerts"][0]["labels"]["instance"] == "gas-8"
    assert other["alerts"][0]["fingerprint"] != first["fingerprint"]
    assert other["groupKey"] != of_gas_7[0]["groupKey"]


def test_a_receiver_chooses_its_severities_and_adds_labels(
    tmp_path: Path, receiver_url: str
) -> None:
    pagerduty = {"red": "critical", "orange": "error", "yellow": "warning", "blue": "info"}
    extra = {"environment": "Development", "service": "hazmat-desk"}
    book, dispatcher = make(
        tmp_path, receiver_url, format="alertmanager", severities=pagerduty, labels=extra
    )
    book.on_detection(gas("raised", "orange", 0, "gas-9"))
    book.on_detection(gas("changed", "red", 1000, "gas-9"))
    asyncio.run(drain(dispatcher))
    asyncio.run(dispatcher.aclose())
    labels = [m["alerts"][0]["labels"] for m in WorkOrders.processed]
    assert [(x["colour"], x["severity"]) for x in labels][:2] == [
        ("orange", "error"),
        ("red", "critical"),
    ]
    assert all(x["environment"] == "Development" for x in labels)
    assert all(x["service"] == "hazmat-desk" for x in labels)
    incident = [m["alerts"][0]["annotations"]["incident_severity"] for m in WorkOrders.processed]
    assert incident[:2] == ["error", "critical"]


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"severities": {"red": "critical"}}, "no severity for blue, yellow, orange"),
        (
            {"severities": {"red": "critical", "orange": "major", "yellow": "minor", "blue": ""}},
            "no severity for blue: give",
        ),
        ({"labels": {"instance": "x"}}, "set by SmartUnit"),
        ({"labels": {"severity": "info"}}, "set by SmartUnit"),
        ({"labels": {"9lives": "x"}}, "letters, digits and _"),
        ({"labels": {"env-name": "x"}}, "letters, digits and _"),
    ],
)
def test_alertmanager_settings_are_checked_at_start(
    settings: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        ReceiverSettings(name="alerta", url="http://127.0.0.1/", format="alertmanager", **settings)


def test_a_silent_gateway_is_an_alertmanager_alert_without_a_value(
    tmp_path: Path, receiver_url: str
) -> None:
    book, dispatcher = make(tmp_path, receiver_url, format="alertmanager")
    silent = DetectionEvent(
        "silent", "silence", "gw-1", "gateway", "", "unit-a", "orange", "green", math.nan, 0
    )
    book.on_detection(silent)
    asyncio.run(drain(dispatcher))
    asyncio.run(dispatcher.aclose())
    (alert,) = WorkOrders.processed[0]["alerts"]
    assert alert["labels"]["instance"] == "gw-1" and alert["labels"]["severity"] == "major"
    assert alert["labels"]["event"] == alert["labels"]["alertname"] == "silence"
    assert "quantity" not in alert["labels"]  # empty labels are absent, as in Prometheus
    assert "value" not in alert["annotations"] and "threshold" not in alert["annotations"]
    assert alert["annotations"]["summary"] == "orange silence on gw-1 of unit-a"


def test_every_configurable_format_is_registered() -> None:
    from typing import get_args

    from collector.alerts.formats import FORMATS
    from collector.config import ReceiverSettings as Settings

    assert set(get_args(Settings.model_fields["format"].annotation)) == set(FORMATS)

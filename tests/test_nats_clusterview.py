"""The operator's view of a cluster: /api/cluster and /metrics of real collector processes
on a real NATS cluster, and the partition-unowned / partition-lag operator alerts."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import nats.js.errors
from pydantic import SecretStr

from collector.alerts.model import Alert
from collector.clusterview import LAG_DETECTOR, UNOWNED_DETECTOR
from collector.config import InfluxSettings
from collector.natsleases import BUCKET, share
from collector.natssubjects import partition_of
from fieldtools.demo import wait_for_collector
from fieldtools.localservices import InfluxDB, free_port, spawn, stop_process
from fieldtools.natscluster import NatsCluster
from tests.conftest import CollectorThread, influx_rows, poll
from tests.natsfixtures import Device, nats_collector_settings, reading
from tests.test_console import CHROMIUM, CHROMIUM_ARGS, browser_driver, keep
from tests.test_metrics import promtool

TOKEN = "tok-cluster"
LEASE_TTL_S = 3.0


def cluster_answer(port: int) -> dict[str, Any]:
    try:
        response = httpx.get(
            f"http://127.0.0.1:{port}/api/cluster",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        )
    except httpx.HTTPError:
        return {}
    return response.json() if response.status_code == 200 else {}


def owned_once_by(answer: dict[str, Any], instances: set[str], partitions: int) -> bool:
    """Every partition has one of ``instances`` as its owner, and each is listed under
    exactly one instance."""
    if {each["id"] for each in answer.get("instances", [])} != instances:
        return False
    listed = sorted(p for each in answer["instances"] for p in each["partitions"])
    owners = {row["partition"]: row["owner"] for row in answer["partitions"]}
    return listed == list(range(partitions)) and set(owners.values()) <= instances


def test_api_cluster_lists_the_instances_and_shows_a_killed_ones_partitions_moved(
    start_nats: Callable[..., NatsCluster], influxdb: InfluxDB, database: str, tmp_path: Path
) -> None:
    cluster: NatsCluster = start_nats(size=1, partitions=8)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ports: dict[str, int] = {}
    for name in ("a", "b"):
        client_id = f"view-{name}-{database}"
        ports[client_id] = free_port()
        config = tmp_path / f"{name}.toml"
        config.write_text(
            f'transport = "nats"\n[mqtt]\nclient_id = "{client_id}"\n'
            f"[nats]\npartitions = {cluster.partitions}\nstream_replicas = 1\n"
            f"lease_ttl_s = {LEASE_TTL_S}\n"
            f'[http]\ntokens = {{ test = "{TOKEN}" }}\n[ingest]\nstats_interval_s = 1.0\n'
        )
        env = {
            **os.environ,
            "SMARTUNIT_MQTT_URL": cluster.mqtt_url,
            "SMARTUNIT_NATS_URL": cluster.urls,
            "SMARTUNIT_INFLUX_URL": influxdb.url,
            "SMARTUNIT_INFLUX_DB": database,
            "SMARTUNIT_DATA_DIR": str(tmp_path / name),
            "SMARTUNIT_HTTP_PORT": str(ports[client_id]),
        }
        command = [sys.executable, "-m", "collector.cli", "run", "--config", str(config)]
        procs[client_id] = spawn(command, env=env, log_path=tmp_path / f"{name}.log")
    first, second = procs
    try:
        for client_id in procs:
            wait_for_collector(cluster.mqtt_url, client_id, timeout_s=60)
        both = set(procs)
        for client_id in procs:  # each instance sees the same cluster
            answer = poll(
                lambda cid=client_id: cluster_answer(ports[cid]),
                lambda got: (
                    owned_once_by(got, both, cluster.partitions)
                    and all(each["partitions"] for each in got["instances"])  # shared
                ),
                60,
            )
            assert owned_once_by(answer, both, cluster.partitions), answer
            assert all(each["partitions"] for each in answer["instances"]), answer
            assert answer["transport"] == "nats" and answer["instance"] == client_id
            assert answer["stream"]["name"] == "$MQTT_msgs"
            for row in answer["partitions"]:
                assert row["lag"] == 0 and 0 <= row["lease_age_s"] <= LEASE_TTL_S, row

        metrics = httpx.get(f"http://127.0.0.1:{ports[first]}/metrics", timeout=10).text
        checked = promtool(metrics)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "smartunit_cluster_instances 2.0" in metrics
        assert 'smartunit_partition_lag{partition="7"} 0.0' in metrics
        assert 'smartunit_partition_lease_age_seconds{partition="0"}' in metrics
        owned_by_first = next(
            each["partitions"] for each in answer["instances"] if each["id"] == first
        )
        assert f"smartunit_cluster_partitions_owned {float(len(owned_by_first))}" in metrics

        procs[second].send_signal(signal.SIGKILL)
        procs[second].wait()
        after = poll(
            lambda: cluster_answer(ports[first]),
            lambda got: owned_once_by(got, {first}, cluster.partitions),
            60,
        )
        assert owned_once_by(after, {first}, cluster.partitions), after
        assert {row["owner"] for row in after["partitions"]} == {first}
    finally:
        for proc in procs.values():
            stop_process(proc)


class FakeMember:
    """A fake collector: it renews a membership in the lease bucket but never claims a
    partition, so its share of the partitions stays without an owner (what a member stuck
    between its heartbeat and its claims would do)."""

    def __init__(self, cluster: NatsCluster, name: str) -> None:
        self.name = name
        self._urls = cluster.urls.split(",")
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    async def _run(self) -> None:
        nc = await nats.connect(self._urls)
        try:
            kv = None
            while not self._stop.is_set():
                try:
                    kv = kv or await nc.jetstream().key_value(BUCKET)
                    await kv.put(f"member.{self.name}", self.name.encode())
                except Exception as exc:  # the bucket is the collector's to create
                    self.errors.append(repr(exc))
                await asyncio.sleep(0.3)
        finally:
            await nc.close()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def console_cluster(port: int, tmp_path: Path, instance: str, partition: int) -> dict[str, str]:
    """The console's cluster tab, in English: this instance's row and one partition's."""
    sync_api = browser_driver()
    assert Path(CHROMIUM).exists(), "Debian's chromium is installed by scripts/install-deps.sh"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.add_init_script("localStorage.setItem('smartunit.lang', 'en')")
        page.goto(f"http://127.0.0.1:{port}/")
        page.fill("#login-actor", "duty officer Li")
        page.fill("#login-token", TOKEN)
        page.click("#login-submit")
        page.locator("#tab-cluster").wait_for(state="visible", timeout=15_000)
        page.click("#tab-cluster")
        row = page.locator(f'#cluster-partitions tr[data-partition="{partition}"]')
        row.wait_for(timeout=15_000)
        shown = {
            "partition": row.inner_text(),
            "instance": page.locator(
                f'#cluster-instances tr[data-instance="{instance}"]'
            ).inner_text(),
        }
        page.screenshot(path=tmp_path / "console-cluster.png")
        keep(tmp_path / "console-cluster.png")
        browser.close()
    return shown


def operator_alert(collector: CollectorThread, detector: str) -> Alert | None:
    book = collector.collector.alerts if collector.collector is not None else None
    assert book is not None
    found = [alert for alert in book.find() if alert.fingerprint.detector == detector]
    return found[-1] if found else None


def test_a_partition_left_without_owner_raises_partition_unowned_and_partition_lag(
    start_nats: Callable[..., NatsCluster],
    influxdb: InfluxDB,
    database: str,
    tmp_path: Path,
    run_collector: Callable[..., CollectorThread],
) -> None:
    cluster: NatsCluster = start_nats(size=1, partitions=8)
    settings = nats_collector_settings(
        cluster,
        influx_url=influxdb.url,
        database=database,
        data_dir=tmp_path / "c",
        stream_replicas=1,
        lease_ttl_s=LEASE_TTL_S,
        lag_alert_messages=3,
        lag_alert_intervals=1,
    )
    settings = settings.model_copy(
        update={"http": settings.http.model_copy(update={"tokens": {"t": SecretStr(TOKEN)}})}
    )
    me = settings.mqtt.client_id
    collector = run_collector(settings)
    fake = FakeMember(cluster, f"fake-{database}")
    fakes_share = [p for p, member in share([me, fake.name], 8).items() if member == fake.name]
    assert fakes_share
    device_id = next(
        f"stuck-{n}" for n in range(1000) if partition_of(f"stuck-{n}", 8) in fakes_share
    )
    device = Device(cluster.nodes[0].mqtt_port, family="camera", device_id=device_id)
    try:
        # the fake's share is left without an owner; then its devices publish
        poll(
            lambda: cluster_answer(settings.http.port),
            lambda got: (
                sorted(p for each in got.get("instances", []) for p in each["partitions"])
                == sorted(set(range(8)) - set(fakes_share))
            ),
            60,
        )
        for seq in range(5):
            assert device.publish(reading(seq))
        unowned = poll(
            lambda: operator_alert(collector, UNOWNED_DETECTOR),
            lambda alert: alert is not None and alert.condition_active,
            60,
        )
        assert unowned is not None and unowned.colour == "red", unowned
        assert unowned.fingerprint.device == "_cluster"
        lag = poll(
            lambda: operator_alert(collector, LAG_DETECTOR),
            lambda alert: alert is not None and alert.condition_active,
            60,
        )
        assert lag is not None and lag.colour == "orange", lag
        stuck = partition_of(device_id, 8)
        row = cluster_answer(settings.http.port)["partitions"][stuck]
        assert row["owner"] is None and row["lag"] == 5, row
        shown = console_cluster(settings.http.port, tmp_path, me, stuck)
        assert "no owner" in shown["partition"] and "\t5 (" in shown["partition"], shown
        assert "(this instance)" in shown["instance"], shown

        assert fake.alive(), fake.errors
        fake.stop()  # its membership expires: the collector claims and reads its share
        for detector in (UNOWNED_DETECTOR, LAG_DETECTOR):
            cleared = poll(
                lambda d=detector: operator_alert(collector, d),
                lambda alert: alert is not None and not alert.condition_active,
                60,
            )
            assert cleared is not None and not cleared.condition_active, cleared
        rows = poll(
            lambda: influx_rows(
                InfluxSettings(url=influxdb.url, database=database),
                f'SELECT "seq" FROM "camera" WHERE "device" = \'{device_id}\'',
            ),
            lambda got: len(got) == 5,
            60,
        )
        assert len(rows) == 5
    finally:
        fake.stop()
        device.close()

"""TLS end to end: devices -> mqtts (client certificates required) -> collector -> https InfluxDB.

A throwaway CA made with openssl signs the servers' and the collector's certificates.
Both MQTT receivers are covered; so are the refusals a wrong trust setting must cause.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector.config import InfluxSettings, MqttTls, Settings
from collector.configfile import load_settings
from collector.errors import RetryableStoreError
from collector.influx import InfluxClient, query_sync
from fieldtools.localservices import InfluxDB, Mosquitto, ServerTls
from tests.conftest import CollectorThread, collector_env, poll


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _certificate(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> None:
    key, csr = directory / f"{name}.key", directory / f"{name}.csr"
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", csr, "-subj", f"/CN={name}",
    )  # fmt: skip
    ext = directory / f"{name}.ext"
    ext.write_text(extensions + "\n")
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-out", directory / f"{name}.crt", "-days", "2", "-extfile", ext,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.crt, server.crt/key (127.0.0.1) and collector.crt/key (a client certificate)."""
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", d / "ca.key", "-out", d / "ca.crt", "-days", "2",
        "-subj", "/CN=SmartUnit test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    ca = (d / "ca.crt", d / "ca.key")
    _certificate(
        d, "server", ca, "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"
    )
    _certificate(d, "collector", ca, "extendedKeyUsage=clientAuth")
    _certificate(d, "device", ca, "extendedKeyUsage=clientAuth")
    return d


@pytest.fixture(scope="module")
def servers(
    pki: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Mosquitto, InfluxDB]]:
    server = ServerTls(
        cert_file=pki / "server.crt", key_file=pki / "server.key", client_ca=pki / "ca.crt"
    )
    broker = Mosquitto(tmp_path_factory.mktemp("tls-mosquitto"), tls=server).start()
    influxdb = InfluxDB(
        tmp_path_factory.mktemp("tls-influxdb"),
        tls=ServerTls(cert_file=pki / "server.crt", key_file=pki / "server.key"),
    ).start()
    yield broker, influxdb
    broker.stop()
    influxdb.stop()


def _settings(
    pki: Path, broker: Mosquitto, influxdb: InfluxDB, database: str, tmp_path: Path, **mqtt: Any
) -> Settings:
    settings = load_settings(None, env=collector_env(broker, influxdb, database, tmp_path / "data"))
    tls = MqttTls(
        ca_file=pki / "ca.crt", cert_file=pki / "collector.crt", key_file=pki / "collector.key"
    )
    return settings.model_copy(
        update={
            "mqtt": settings.mqtt.model_copy(
                update={"client_id": f"tls-{database}", "tls": tls, **mqtt}
            ),
            "influx": settings.influx.model_copy(update={"ca_file": pki / "ca.crt"}),
        }
    )


def _device(pki: Path, broker: Mosquitto) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"device-{time.time_ns()}")
    client.tls_set(
        ca_certs=str(pki / "ca.crt"),
        certfile=str(pki / "device.crt"),
        keyfile=str(pki / "device.key"),
    )
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


@pytest.mark.parametrize("receiver", ["bulk", "paho"])
def test_readings_travel_over_mqtts_with_client_certificates_into_https_influxdb(
    receiver: str,
    pki: Path,
    servers: tuple[Mosquitto, InfluxDB],
    run_collector: Callable[[Settings], CollectorThread],
    tmp_path: Path,
) -> None:
    broker, influxdb = servers
    database = f"tls_{receiver}_{time.time_ns() % 10**8}"
    settings = _settings(pki, broker, influxdb, database, tmp_path, receiver=receiver)
    collector = run_collector(settings)
    device = _device(pki, broker)
    now = time.time()
    for seq in range(20):
        body = {"ts": now - 20 + seq, "seq": seq, "occupied": seq}
        device.publish(
            "smartunit/v1/parking/lot-tls/data", orjson.dumps(body), qos=1
        ).wait_for_publish(10)
    device.loop_stop()
    device.disconnect()

    def count() -> int:
        try:
            found = query_sync(settings.influx, 'SELECT count("seq") FROM "parking"')
        except RetryableStoreError:
            return 0  # the database is not there yet
        return int(found[0]["values"][0][1]) if found else 0

    assert poll(count, lambda n: n == 20, timeout_s=30) == 20
    assert collector.stats.rejected == 0


def test_influxdb_with_an_untrusted_certificate_is_refused(
    servers: tuple[Mosquitto, InfluxDB],
) -> None:
    _, influxdb = servers

    async def write() -> None:
        # No ca_file: the system's trust store, which does not know the test CA.
        async with InfluxClient(InfluxSettings(url=influxdb.url, database="x")) as client:
            await client.write_lines(["m v=1i 1"])

    with pytest.raises(RetryableStoreError, match=r"(?i)certificate.verify.failed"):
        asyncio.run(write())


@pytest.mark.parametrize("receiver", ["bulk", "paho"])
def test_an_untrusted_broker_gets_no_connection(
    receiver: str,
    pki: Path,
    servers: tuple[Mosquitto, InfluxDB],
    run_collector: Callable[[Settings], CollectorThread],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker, influxdb = servers
    database = f"tls_refused_{receiver}_{time.time_ns() % 10**8}"
    settings = _settings(pki, broker, influxdb, database, tmp_path, receiver=receiver)
    # trust only the system store: the broker's certificate must be refused
    untrusted = settings.mqtt.tls.model_copy(update={"ca_file": None})
    settings = settings.model_copy(
        update={"mqtt": settings.mqtt.model_copy(update={"tls": untrusted})}
    )
    caplog.set_level(logging.WARNING, logger="collector")
    collector = CollectorThread(settings)
    collector._thread.start()
    said = {"bulk": "certificate verify failed", "paho": "MQTT connection to 127.0.0.1 failed"}
    try:
        refused = poll(
            lambda: [r for r in caplog.records if said[receiver] in r.getMessage()],
            bool,
            timeout_s=15,
        )
        assert refused, [r.getMessage() for r in caplog.records]
        assert collector.collector is not None
        assert not collector.collector.source.connected.is_set()
    finally:
        collector.stop()
    context = ssl.create_default_context()  # and a device without the CA is refused too
    with pytest.raises(ssl.SSLError):
        paho_client = paho.Client(CallbackAPIVersion.VERSION2)
        paho_client.tls_set_context(context)
        paho_client.connect("127.0.0.1", broker.port)

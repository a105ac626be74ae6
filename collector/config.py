"""Configuration: the settings' models, validated once at start.

``config/smartunit.example.toml`` is the manual for every key. Unknown keys are errors
(a typo must not silently fall back to a default). Reading the file and applying the
environment's overrides is ``collector.configfile``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from collector.families import FAMILIES, known_family
from collector.urls import url_problem

PositiveFloat = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttTls(_Section):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False


class MqttSettings(_Section):
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str = "smartunit-collector"
    keepalive_s: Annotated[int, Field(ge=5, le=65535)] = 30
    session_expiry_s: Annotated[int, Field(ge=0)] = 7 * 24 * 3600
    receive_maximum: Annotated[int, Field(ge=100, le=65535)] = 50_000
    reconnect_min_s: PositiveFloat = 0.5
    reconnect_max_s: PositiveFloat = 30.0
    tls: MqttTls = MqttTls()
    # "paho": paho-mqtt's network thread; "bulk": the collector's own MQTT v5 receiver on
    # its event loop, which parses many packets per read (collector/mqttbulk.py).
    receiver: Literal["paho", "bulk"] = "bulk"

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parse_mqtt_url(url)
        return url

    @property
    def endpoint(self) -> MqttEndpoint:
        return parse_mqtt_url(self.url)


class MqttEndpoint(BaseModel):
    model_config = ConfigDict(frozen=True)
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: SecretStr | None = None


def parse_mqtt_url(url: str) -> MqttEndpoint:
    parts = urlsplit(url)
    if parts.scheme not in {"mqtt", "mqtts"}:
        raise ValueError(f"scheme must be mqtt:// or mqtts://, not {parts.scheme or 'none'!r}")
    problem = url_problem(url)
    if problem is not None:
        raise ValueError(f"the URL {problem}")
    tls = parts.scheme == "mqtts"
    port = parts.port or (8883 if tls else 1883)
    return MqttEndpoint(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=SecretStr(unquote(parts.password)) if parts.password else None,
    )


def _http_url(url: str) -> str:
    if urlsplit(url).scheme not in {"http", "https"}:
        raise ValueError("must be an http:// or https:// URL")
    problem = url_problem(url)
    if problem is not None:
        raise ValueError(f"the URL {problem}")
    return url


class InfluxSettings(_Section):
    url: str = "http://127.0.0.1:8086"
    database: str = "smartunit"
    retention_policy: str = ""
    token: SecretStr | None = None
    create_database: bool = True
    timeout_s: PositiveFloat = 10.0
    gzip: bool = False
    ca_file: Path | None = None
    verify_tls: bool = True

    _check_url = field_validator("url")(classmethod(lambda cls, url: _http_url(url)))

    @field_validator("database")
    @classmethod
    def _check_database(cls, name: str) -> str:
        if not name or any(c in name for c in "\"'\\\n"):
            raise ValueError("must be non-empty, without quotes, backslashes or newlines")
        return name


class IngestSettings(_Section):
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5000
    flush_interval_ms: Annotated[int, Field(ge=1, le=60_000)] = 100
    max_payload_bytes: Annotated[int, Field(ge=64)] = 256 * 1024
    max_objects_per_message: Annotated[int, Field(ge=1)] = 1000
    # New quantities one device may add beyond the protocol's, the rule files' and its
    # registry entry's; more are dropped as too_many_quantities (collector/admission.py).
    max_quantities_per_device: Annotated[int, Field(ge=1)] = 64
    max_future_s: Annotated[float, Field(ge=0)] = 300.0
    max_age_s: PositiveFloat = 30 * 24 * 3600.0
    write_queue_batches: Annotated[int, Field(ge=1, le=64)] = 4
    # InfluxDB writes in flight at once: the server parses one batch while it stores the
    # last. Messages are still acknowledged in the order they arrived.
    write_concurrency: Annotated[int, Field(ge=1, le=16)] = 2
    retry_initial_s: PositiveFloat = 0.5
    retry_max_s: PositiveFloat = 30.0
    stats_interval_s: PositiveFloat = 10.0
    publish_rejections: bool = True
    # Per device (the topic's id): messages per second, and how many may come at once.
    # Beyond, messages are rejected as rate_limited (collector/ratelimit.py). 0 = no limit.
    device_rate_per_s: Annotated[float, Field(ge=0)] = 20.0
    device_burst: Annotated[int, Field(ge=1)] = 2000
    # Falling behind: when the median age of what arrives (receive time minus the newest
    # device time of each message) stays above this for two stats intervals, an operator
    # alert "collector-behind" opens; it clears below half of it. 0 = no alert.
    behind_alert_s: Annotated[float, Field(ge=0)] = 120.0
    # While InfluxDB is down or slower than spool_after_s, batches go to a disk spool in
    # data_dir/spool (fsync'ed, then acknowledged) and are replayed in order once it
    # answers. When the spool holds spool_max_bytes, messages stay with the broker
    # instead (nothing dropped), as when its disk is full; operator alerts: 80 % full,
    # disk full, damaged records skipped (collector/spool.py, collector/operator.py).
    spool: bool = True
    spool_max_bytes: Annotated[int, Field(ge=1024 * 1024)] = 1024**3
    spool_after_s: PositiveFloat = 10.0
    # On stop, how long to keep trying to write what was received. What InfluxDB does not
    # take by then stays unacknowledged with the broker, delivered again at the next start.
    shutdown_flush_s: PositiveFloat = 15.0


class HttpSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    # Bearer tokens, one per integration (its name is recorded with every action it
    # takes). SMARTUNIT_API_TOKEN adds one named "default".
    tokens: dict[str, SecretStr] = {}
    # Largest request body; anything larger is refused (413) before it is read.
    max_body_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 32 * 1024
    # Time a client has to send its body once the headers are in (408 after).
    body_timeout_s: PositiveFloat = 10.0
    # Connections served at once; more are answered 503 at once.
    max_connections: Annotated[int, Field(ge=1)] = 100


class RegistrySettings(_Section):
    path: Path | None = None
    reload_interval_s: PositiveFloat = 2.0
    # A registry file with no units and no devices is refused (at start and on reload)
    # unless this is set: an emptied file would unregister every device at once.
    allow_empty: bool = False


class SilenceSettings(_Section):
    enabled: bool = True
    check_interval_s: PositiveFloat = 10.0
    timeout_s: PositiveFloat | None = None
    interval_multiple: PositiveFloat = 5.0
    minimum_s: Annotated[float, Field(ge=0)] = 120.0
    allowance_s: Annotated[float, Field(ge=0)] = 60.0
    fleet_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    fleet_min: Annotated[int, Field(ge=1)] = 20


class DetectionSettings(_Section):
    enabled: bool = True
    rules: list[Path] = []
    statistical: str | None = "auto"
    # Parameters of that detector, plus ``decide`` for the decider (docs/detectors.md).
    statistical_params: dict[str, Any] = {}
    # Per family, over the family's own defaults and ``statistical_params``.
    statistical_family_params: dict[
        Annotated[str, AfterValidator(known_family)], dict[str, Any]
    ] = {}
    statistical_colour: Literal["blue", "yellow", "orange", "red"] = "yellow"
    warm_start_hours: Annotated[float, Field(ge=0, le=24 * 31)] = 24.0
    # Values (readings x quantities) the warm start may ask InfluxDB for in all.
    warm_start_max_points: Annotated[int, Field(ge=1)] = 5_000_000
    # A reading this much older than its series' newest judged one, while that newest
    # lies this much ahead of the collector's clock, is a device clock stepping back:
    # the device's series are re-anchored at it (collector/detection.py).
    clock_step_back_s: Annotated[float, Field(ge=0)] = 10.0
    # (device, quantity) series the collector stores and judges at most; new ones beyond
    # are dropped as too_many_series. Also what the warm start may create.
    max_series: Annotated[int, Field(ge=1)] = 100_000
    silence: SilenceSettings = SilenceSettings()

    @field_validator("statistical")
    @classmethod
    def _known_detector(cls, name: str | None) -> str | None:
        from detectors.registry import DETECTORS  # noqa: PLC0415 - detectors register on import

        if name and name not in DETECTORS:
            raise ValueError(f"unknown detector {name!r}; known: {', '.join(sorted(DETECTORS))}")
        return name or None

    @model_validator(mode="after")
    def _chain_builds(self) -> DetectionSettings:
        from collector.statistical import statistical_chains  # noqa: PLC0415 - detectors register

        try:  # a typo in a parameter fails at load, not at the first reading
            statistical_chains(
                self.statistical, self.statistical_params, self.statistical_family_params
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"statistical_params for {self.statistical!r}: {exc}") from None
        return self


# Prometheus' label names; the labels that identify an alert in the Alertmanager format
# (collector/alerts/notify.py), which a receiver's own labels may not replace.
LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
IDENTIFYING_LABELS = frozenset(
    {"alertname", "event", "instance", "severity", "colour", "device", "quantity", "unit", "family"}
)


# Silent gateways (collector/detection.py) raise alerts under the family "gateway".
ALERT_FAMILIES = (*FAMILIES, "gateway")


def _alert_family(name: str) -> str:
    if name not in ALERT_FAMILIES:
        raise ValueError(f"unknown family {name!r}; known: {', '.join(ALERT_FAMILIES)}")
    return name


class ReceiverSettings(_Section):
    """A webhook receiver: a work-order system, a 12345 hotline platform, a chat bridge."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    url: str
    secret: SecretStr | None = None
    format: Literal["native", "alertmanager"] = "native"
    # Routing: empty means any. A hierarchy prefix "suzhou/gusu" takes that district.
    families: list[Annotated[str, AfterValidator(_alert_family)]] = []
    min_colour: Literal["blue", "yellow", "orange", "red"] = "blue"
    hierarchy_prefix: str = ""
    # Escalation levels this receiver answers for (empty: every level). A district's
    # command desk with levels = ["district"] hears of an alert when it escalates there.
    levels: list[Literal["grid", "community", "street", "district", "city"]] = []
    # One work order per incident: alerts that join a unit's open incident reach this
    # receiver as "incident_joined" events of the leading alert, not on their own.
    group_incidents: bool = True
    # The whole request, from connecting to the last byte of the answer: a receiver that
    # answers a byte at a time is given up on (and retried) after this long.
    timeout_s: PositiveFloat = 10.0
    # Deliveries to this receiver at once (each its own connection). Each receiver has its
    # own, so a slow one never holds up another; one alert's events still go in order.
    max_in_flight: Annotated[int, Field(ge=1, le=64)] = 4
    # Failing (no delivery since its first failed attempt) for this long: an operator
    # alert "webhook-failing" names the receiver; it clears once it delivers again.
    alert_after_s: PositiveFloat = 300.0
    # An event this receiver has not taken this long after it was written, at its next
    # failed attempt, goes to the dead-letter list, and the operator alert turns red.
    give_up_after_s: PositiveFloat = 86_400.0

    # Alertmanager format: the `severity` label each colour is sent as. The default is
    # ITU X.733's scale, which Alerta's default configuration accepts (docs/webhooks.md
    # has the tables for PagerDuty-style and Grafana OnCall receivers).
    severities: dict[Literal["blue", "yellow", "orange", "red"], str] = {
        "red": "critical",
        "orange": "major",
        "yellow": "minor",
        "blue": "warning",
    }
    # Alertmanager format: labels added to every alert, such as environment for Alerta;
    # they may replace `service` and `group`, not the labels that identify an alert.
    labels: dict[str, str] = {}

    _check_url = field_validator("url")(classmethod(lambda cls, url: _http_url(url)))

    @model_validator(mode="after")
    def _alert_before_giving_up(self) -> ReceiverSettings:
        # Someone must hear of a failing receiver before its events are given up on.
        if self.give_up_after_s < self.alert_after_s:
            raise ValueError("give_up_after_s must not be shorter than alert_after_s")
        return self

    @field_validator("severities")
    @classmethod
    def _every_colour_has_a_severity(cls, table: dict[str, str]) -> dict[str, str]:
        missing = [c for c in ("blue", "yellow", "orange", "red") if not table.get(c)]
        if missing:
            raise ValueError(f"no severity for {', '.join(missing)}: give one for every colour")
        return table

    @field_validator("labels")
    @classmethod
    def _labels_are_extra(cls, labels: dict[str, str]) -> dict[str, str]:
        for name in labels:
            if not LABEL_NAME.fullmatch(name):
                raise ValueError(f"label {name!r}: letters, digits and _, not first a digit")
            if name in IDENTIFYING_LABELS:
                raise ValueError(f"label {name!r} is set by SmartUnit for every alert")
        return labels


ALERT_STORE_URL = re.compile(r"sqlite:///.+|postgresql://.+")


class AlertSettings(_Section):
    enabled: bool = True
    receivers: list[ReceiverSettings] = []
    # Delivery retries: doubling from retry_initial_s up to retry_max_s, without end.
    retry_initial_s: PositiveFloat = 1.0
    retry_max_s: PositiveFloat = 300.0
    # Five-level response: seconds an alert of each colour may stay unacknowledged before
    # it escalates one level (grid -> community -> street -> district -> city).
    ack_deadlines_s: dict[Literal["blue", "yellow", "orange", "red"], PositiveFloat] = {
        "red": 300.0,
        "orange": 900.0,
        "yellow": 3600.0,
    }
    # Base of the alert links in payloads (the console of the command centre).
    public_url: str = "http://127.0.0.1:8080"
    # Relative to data_dir.
    database: Path = Path("alerts.db")
    # Where alerts are kept, as a URL (relative paths under data_dir); empty: the SQLite
    # file `database`.
    store: str = ""
    # A store shared by several instances (PostgreSQL): how long an instance's claim on
    # an outbox row, or its turn at the alert clock, holds before another may take it.
    claim_lease_s: PositiveFloat = 60.0
    # "closed" needs the readings normal for this long after the handler's resolution.
    verify_window_s: PositiveFloat = 300.0
    verify_interval_s: PositiveFloat = 10.0

    @field_validator("store")
    @classmethod
    def _check_store(cls, url: str) -> str:
        if url and not ALERT_STORE_URL.fullmatch(url):
            raise ValueError(
                "expected sqlite:///<path> (relative to data_dir) or "
                "postgresql://<user>@<host>:<port>/<database>"
            )
        if url.startswith("postgresql:") and (problem := url_problem(url)) is not None:
            raise ValueError(f"the PostgreSQL URL {problem}")
        return url

    @model_validator(mode="after")
    def _claims_outlast_their_work(self) -> AlertSettings:
        # A claim that expired while its holder was still delivering, or between two
        # turns of its clock, lets another instance do the same work: a repeat.
        slowest = max([r.timeout_s for r in self.receivers] + [self.verify_interval_s])
        if self.claim_lease_s <= slowest:
            raise ValueError(
                "claim_lease_s must be longer than verify_interval_s and every receiver's timeout_s"
            )
        return self

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:///{self.database}"

    def sqlite_file(self, data_dir: Path) -> Path:
        """The SQLite file the store's URL names (what ``alerts-db`` checks and recovers)."""
        return data_dir / self.store_url.partition(":///")[2]


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"
    rejection_log_interval_s: PositiveFloat = 10.0


def _nats_urls(urls: str) -> str:
    # A server's URL may carry the collector's user and password: never repeated here.
    for number, url in enumerate(urls.split(","), start=1):
        if urlsplit(url.strip()).scheme not in {"nats", "tls"}:
            raise ValueError(f"server {number}: each server must be a nats:// or tls:// URL")
        problem = url_problem(url.strip())
        if problem is not None:
            raise ValueError(f"server {number}: the URL {problem}")
    return urls


class NatsSettings(_Section):
    """The NATS cluster of ``transport = "nats"`` (collector/natssource.py)."""

    url: Annotated[str, AfterValidator(_nats_urls)] = "nats://127.0.0.1:4222"
    # must equal the partition count of the servers' subject mapping (checked at start)
    partitions: Annotated[int, Field(ge=1, le=1024)] = 64
    consumer_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")] = "smartunit"
    stream_replicas: Annotated[int, Field(ge=1, le=5)] = 3
    stream_max_bytes: Annotated[int, Field(ge=-1)] = -1
    ack_wait_s: Annotated[float, Field(ge=3)] = 30.0
    lease_ttl_s: Annotated[float, Field(ge=1.5)] = 10.0
    fetch_batch: Annotated[int, Field(ge=1, le=10_000)] = 500
    # operator alert partition-lag (collector/clusterview.py); 0 turns it off
    lag_alert_messages: Annotated[int, Field(ge=0)] = 10_000
    lag_alert_intervals: Annotated[int, Field(ge=1, le=1000)] = 3
    checkpoint_interval_s: Annotated[float, Field(gt=0)] = 10.0


class Settings(_Section):
    # "mqtt": one MQTT broker (Mosquitto), the default. "nats": devices on the MQTT
    # gateway of a NATS cluster, data read from JetStream partitions ([nats]).
    transport: Literal["mqtt", "nats"] = "mqtt"
    mqtt: MqttSettings = MqttSettings()
    nats: NatsSettings = NatsSettings()
    influx: InfluxSettings = InfluxSettings()
    ingest: IngestSettings = IngestSettings()
    http: HttpSettings = HttpSettings()
    registry: RegistrySettings = RegistrySettings()
    detection: DetectionSettings = DetectionSettings()
    alerts: AlertSettings = AlertSettings()
    logging: LoggingSettings = LoggingSettings()
    data_dir: Path = Path("data")

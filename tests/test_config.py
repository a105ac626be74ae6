"""Configuration: the example parses, environment overrides win, bad keys exit with 2."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import get_args, get_origin

import pytest
from pydantic import BaseModel

from collector.config import Settings, parse_mqtt_url
from collector.configfile import load_settings, redacted
from collector.errors import ConfigError
from collector.logs import JsonFormatter

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "smartunit.example.toml"


def test_example_config_parses_with_its_registry() -> None:
    settings = load_settings(EXAMPLE, env={})
    assert settings.mqtt.url == "mqtt://127.0.0.1:1883"
    assert settings.registry.path == ROOT / "config" / "registry.example.toml"
    out = subprocess.run(
        [sys.executable, "-m", "collector.cli", "check-config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "7 units, 11 devices" in out


def test_environment_overrides_win(tmp_path: Path) -> None:
    env = {
        "SMARTUNIT_MQTT_URL": "mqtts://dev%40ice:s3cr%3At@broker.example:8884",
        "SMARTUNIT_INFLUX_URL": "http://influx.example:8086",
        "SMARTUNIT_INFLUX_DB": "city",
        "SMARTUNIT_INFLUX_TOKEN": "tok-123",
        "SMARTUNIT_HTTP_HOST": "0.0.0.0",
        "SMARTUNIT_HTTP_PORT": "9090",
        "SMARTUNIT_PUBLIC_URL": "https://smartunit.example",
        "SMARTUNIT_DATA_DIR": str(tmp_path),
    }
    for source in (EXAMPLE, None):
        settings = load_settings(source, env=env)
        endpoint = settings.mqtt.endpoint
        assert (endpoint.host, endpoint.port, endpoint.tls) == ("broker.example", 8884, True)
        assert endpoint.username == "dev@ice"
        assert endpoint.password is not None and endpoint.password.get_secret_value() == "s3cr:t"
        assert settings.influx.url == "http://influx.example:8086"
        assert settings.influx.database == "city"
        assert settings.influx.token is not None
        assert settings.influx.token.get_secret_value() == "tok-123"
        assert settings.http.port == 9090
        assert settings.http.host == "0.0.0.0"
        assert settings.alerts.public_url == "https://smartunit.example"
        assert settings.data_dir == tmp_path


def test_smartunit_config_names_the_file_when_no_path_is_given(tmp_path: Path) -> None:
    settings = load_settings(None, env={"SMARTUNIT_CONFIG": str(EXAMPLE)})
    assert settings.registry.path == ROOT / "config" / "registry.example.toml"
    (tmp_path / "other.toml").write_text("[http]\nport = 9999\n")
    given = load_settings(tmp_path / "other.toml", env={"SMARTUNIT_CONFIG": str(EXAMPLE)})
    assert given.http.port == 9999 and given.registry.path is None  # a path given wins


def test_secrets_never_reach_a_log_line() -> None:
    settings = load_settings(
        None,
        env={
            "SMARTUNIT_MQTT_URL": "mqtt://u:hunter2@h:1",
            "SMARTUNIT_INFLUX_TOKEN": "tok-secret",
            "SMARTUNIT_INFLUX_URL": "http://a:pw-influx@h:8086",
        },
    )
    record = logging.LogRecord("t", logging.INFO, "", 0, "settings", (), None)
    record.settings = redacted(settings)
    line = JsonFormatter().format(record)
    for secret in ("hunter2", "tok-secret", "pw-influx"):
        assert secret not in line
    assert "***" in line


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[mqtt]\nurll = 'x'\n", "mqtt.urll: unknown key"),
        ("[ingest]\nbatch_size = 0\n", "ingest.batch_size"),
        ("[mqtt]\nurl = 'http://x'\n", "mqtt.url"),
        ('[influx]\ndatabase = "a\'b"\n', "influx.database"),
        ("typo = 1\n", "typo: unknown key"),
        ("[detection]\nstatistical_params = { noise_multipel = 1 }\n", "noise_multipel"),
        ("[detection]\nstatistical_params = { shift = { z = -1 } }\n", "z > 0"),
        ("[detection]\nstatistical_family_params = { boat = {} }\n", "unknown family 'boat'"),
        ("[detection]\nstatistical_family_params = { chem = { p_alert = 2 } }\n", "p_alert"),
        ("[alerts]\nstore = 'postgres://db/alerts'\n", "alerts.store"),
        ("[alerts]\nstore = 'postgresql://u:a/b@db/alerts'\n", "alerts.store"),
    ],
)
def test_bad_keys_are_named_and_exit_2(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(path, env={})
    done = subprocess.run(
        [sys.executable, "-m", "collector.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert key in done.stderr


def test_bad_registry_exits_2(tmp_path: Path) -> None:
    (tmp_path / "reg.toml").write_text(
        "[units.u]\nhierarchy = { city = 'c', district = 'd', street = 's', community = 'm', "
        "grid = 'bad\\\\grid' }\n[devices.'bad id']\nunit = 'u'\nfamily = 'camera'\n"
    )
    (tmp_path / "c.toml").write_text("[registry]\npath = 'reg.toml'\n")
    done = subprocess.run(
        [sys.executable, "-m", "collector.cli", "check-config", str(tmp_path / "c.toml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "units.u.hierarchy.grid" in done.stderr
    assert "devices.bad id" in done.stderr


def test_mqtt_url_forms() -> None:
    assert parse_mqtt_url("mqtt://h").port == 1883
    assert parse_mqtt_url("mqtts://h").port == 8883
    with pytest.raises(ValueError, match="scheme"):
        parse_mqtt_url("tcp://h:1883")


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"SMARTUNIT_WEBHOOK_URL": "http://ops:hunter2/x@hooks.example/in"}, "receivers.0.url"),
        ({"SMARTUNIT_WEBHOOK_URL": "https://ops:hunter2#x@hooks.example/in"}, "receivers.0.url"),
        ({"SMARTUNIT_WEBHOOK_URL": "https://ops:12/hunter2@hooks.example/in"}, "receivers.0.url"),
        ({"SMARTUNIT_MQTT_URL": "mqtt://dev:hunter2/x@broker.example:1883"}, "mqtt.url"),
        ({"SMARTUNIT_MQTT_URL": "mqtts://dev:hunter2?x@broker.example"}, "mqtt.url"),
        ({"SMARTUNIT_INFLUX_URL": "http://a:hunter2#x@influx.example:8086"}, "influx.url"),
        (
            {"SMARTUNIT_NATS_URL": "nats://c:ok@nats-1:4222,nats://c:hunter2/x@nats-2:4222"},
            "nats.url",
        ),
    ],
)
def test_a_password_with_a_reserved_character_is_refused_without_echoing_it(
    tmp_path: Path, env: dict[str, str], key: str
) -> None:
    """Unencoded, its tail would be read as the path: the host would be the user name."""
    with pytest.raises(ConfigError, match=r"percent-encode") as refused:
        load_settings(None, env=env)
    assert key in str(refused.value) and "hunter2" not in str(refused.value)
    config = tmp_path / "c.toml"
    config.write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "collector.cli", "check-config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert key in done.stderr and "hunter2" not in done.stdout + done.stderr


def test_receiver_urls_reach_a_log_line_without_their_secrets() -> None:
    settings = load_settings(
        None,
        env={
            "SMARTUNIT_WEBHOOK_URL": "https://ops:p%2Fw-hunter2@hooks.example/in?access_token=tok-x9"
        },
    )
    (receiver,) = settings.alerts.receivers
    assert receiver.url.startswith("https://ops:p%2Fw-hunter2@")  # used as written
    record = logging.LogRecord("t", logging.INFO, "", 0, "settings", (), None)
    record.settings = redacted(settings)
    line = JsonFormatter().format(record)
    for secret in ("hunter2", "ops:", "tok-x9"):
        assert secret not in line
    assert "https://***@hooks.example/in?access_token=***" in line


def model_keys(model: type[BaseModel], section: str = "") -> set[str]:
    """Every key of a settings model, dotted by section; a list of models is ``name[]``."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        dotted = f"{section}.{name}" if section else name
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= model_keys(annotation, dotted)
        elif get_origin(annotation) is list and _is_model(get_args(annotation)[0]):
            keys |= model_keys(get_args(annotation)[0], f"{dotted}[]")
        else:
            keys.add(dotted)
    return keys


def _is_model(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


EXAMPLE_SECTION = re.compile(r"^#?\s*(\[\[?)([a-z_.]+)\]\]?\s*(#.*)?$")
EXAMPLE_KEY = re.compile(r"^#?\s*([a-z_]+)\s*=")


def documented_keys(text: str) -> set[str]:
    """The keys the example sets or shows commented out (``# key = ...``), dotted by section."""
    keys: set[str] = set()
    section = ""
    for line in text.splitlines():
        if found := EXAMPLE_SECTION.match(line):
            section = found.group(2) + ("[]" if found.group(1) == "[[" else "")
        elif found := EXAMPLE_KEY.match(line):
            keys.add(f"{section}.{found.group(1)}" if section else found.group(1))
    return keys


def test_the_example_config_documents_every_setting() -> None:
    documented = documented_keys(EXAMPLE.read_text())
    settings = model_keys(Settings)
    undocumented = sorted(settings - documented)
    assert not undocumented, f"settings the example does not document: {undocumented}"
    unknown = sorted(documented - settings)
    assert not unknown, f"keys in the example that are no setting: {unknown}"


def test_a_postgresql_store_s_password_never_reaches_a_log_line(tmp_path: Path) -> None:
    url = "postgresql://smartunit:hunter2@db.internal:5432/alerts?sslmode=require"
    config = tmp_path / "smartunit.toml"
    config.write_text(f'[alerts]\nstore = "{url}"\n')
    settings = load_settings(config, env={})
    assert settings.alerts.store == url  # used as written
    record = logging.LogRecord("t", logging.INFO, "", 0, "settings", (), None)
    record.settings = redacted(settings)
    line = JsonFormatter().format(record)
    assert "hunter2" not in line and "postgresql://***@db.internal:5432/alerts" in line

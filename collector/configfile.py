"""Reading the configuration: one TOML file (its models are ``collector.config``), with
environment overrides. The environment variables below override the file and always
work, also without any file:

=========================  ==========================================================
SMARTUNIT_MQTT_URL         ``mqtt://[user:pass@]host:port`` (``mqtts://`` for TLS)
SMARTUNIT_MQTT_CLIENT_ID   the collector's MQTT client id (one per instance of a cluster)
SMARTUNIT_TRANSPORT        ``mqtt`` or ``nats``
SMARTUNIT_NATS_URL         ``nats://host:port[,nats://host:port...]`` (transport ``nats``)
SMARTUNIT_INFLUX_URL       ``http(s)://[user:pass@]host:port`` of the InfluxDB HTTP API
SMARTUNIT_INFLUX_DB        database (1.x) or bucket mapped by DBRP (2.x, 3.x)
SMARTUNIT_INFLUX_TOKEN     token sent as ``Authorization: Token ...`` (optional)
SMARTUNIT_HTTP_HOST        address the HTTP API listens on (``0.0.0.0``: every one)
SMARTUNIT_HTTP_PORT        port of the HTTP API
SMARTUNIT_PUBLIC_URL       base of the alert links in webhook payloads
SMARTUNIT_DATA_DIR         directory for durable state
SMARTUNIT_ALERTS_STORE     the alert store's URL (``postgresql://...`` for a cluster)
=========================  ==========================================================

``SMARTUNIT_CONFIG`` names the file itself, read when no path is given (``--config``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from collector.config import Settings
from collector.configerrors import Loc, Problem, describe, validation_problems
from collector.errors import ConfigError
from collector.urls import redact_url

ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "SMARTUNIT_MQTT_URL": ("mqtt", "url"),
    "SMARTUNIT_MQTT_CLIENT_ID": ("mqtt", "client_id"),
    "SMARTUNIT_TRANSPORT": ("transport",),
    "SMARTUNIT_NATS_URL": ("nats", "url"),
    "SMARTUNIT_INFLUX_URL": ("influx", "url"),
    "SMARTUNIT_INFLUX_DB": ("influx", "database"),
    "SMARTUNIT_INFLUX_TOKEN": ("influx", "token"),
    "SMARTUNIT_HTTP_HOST": ("http", "host"),
    "SMARTUNIT_HTTP_PORT": ("http", "port"),
    "SMARTUNIT_PUBLIC_URL": ("alerts", "public_url"),
    "SMARTUNIT_DATA_DIR": ("data_dir",),
    "SMARTUNIT_ALERTS_STORE": ("alerts", "store"),
}
CONFIG_ENV = "SMARTUNIT_CONFIG"

# A catch-all receiver for quick starts: every alert event goes there.
API_TOKEN_ENV = "SMARTUNIT_API_TOKEN"  # noqa: S105 - a variable's name
WEBHOOK_URL_ENV = "SMARTUNIT_WEBHOOK_URL"
WEBHOOK_SECRET_ENV = "SMARTUNIT_WEBHOOK_SECRET"  # noqa: S105 - a variable's name


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> dict[Loc, str]:
    """Sets the overrides present in ``env``; the keys they set, each with its variable."""
    applied: dict[Loc, str] = {}
    for var, path in ENV_OVERRIDES.items():
        value = env.get(var)
        if value is None or value == "":
            continue
        node = raw
        for key in path[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(path[:-1])}: must be a table to apply {var}")
            node = child
        node[path[-1]] = value
        applied[path] = var
    return applied


def format_validation_errors(
    exc: ValidationError, heading: str, *, model: type[BaseModel], path: Path | None = None
) -> str:
    """One line per problem, each naming its file and line (when it comes from ``path``),
    its key path (``mqtt.url: ...``) and, for a misspelt key, the closest valid one."""
    return describe(heading, validation_problems(exc, model), path)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """Parse a TOML file; every way it can fail is a ConfigError saying which file."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


def _resolve_relative(settings: Settings, base: Path, env: Mapping[str, str]) -> Settings:
    """Paths in the file are relative to the file, so a config works from any directory.

    (A relative SMARTUNIT_DATA_DIR is taken as given, relative to the working directory.)
    """
    registry_path = settings.registry.path
    updates: dict[str, Any] = {}
    if not settings.data_dir.is_absolute() and not env.get("SMARTUNIT_DATA_DIR"):
        updates["data_dir"] = base / settings.data_dir
    if registry_path is not None and not registry_path.is_absolute():
        updates["registry"] = settings.registry.model_copy(update={"path": base / registry_path})
    rules = [path if path.is_absolute() else base / path for path in settings.detection.rules]
    if rules != settings.detection.rules:
        updates["detection"] = settings.detection.model_copy(update={"rules": rules})
    return settings.model_copy(update=updates) if updates else settings


def load_settings(
    path: Path | str | None = None, *, env: Mapping[str, str] | None = None
) -> Settings:
    """Read, override from the environment, validate. Raises ConfigError naming the bad key."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    origin = "defaults and environment"
    base = Path.cwd()
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
    if path is not None:
        path = Path(path)
        origin = str(path)
        base = path.resolve().parent
        raw = read_toml(path, "configuration")
    from_env = _apply_env(raw, env)
    if env.get(API_TOKEN_ENV):
        http = raw.setdefault("http", {})
        if isinstance(http, dict):
            http.setdefault("tokens", {})["default"] = env[API_TOKEN_ENV]
    if env.get(WEBHOOK_URL_ENV):
        alerts = raw.setdefault("alerts", {})
        receivers = alerts.setdefault("receivers", []) if isinstance(alerts, dict) else []
        receivers.append(
            {
                "name": "default",
                "url": env[WEBHOOK_URL_ENV],
                "secret": env.get(WEBHOOK_SECRET_ENV) or None,
            }
        )
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems = [
            Problem(p.loc, f"{p.message} (set by {from_env[p.loc]})") if p.loc in from_env else p
            for p in validation_problems(exc, Settings)
        ]
        file = Path(path) if path is not None else None
        raise ConfigError(describe(f"invalid configuration in {origin}:", problems, file)) from None
    return _resolve_relative(settings, base, env)


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as a dict fit for a log line: secrets, URL users, passwords and query
    values masked (a webhook's token often rides in its query string)."""
    data = settings.model_dump(mode="json")
    data["mqtt"]["url"] = redact_url(settings.mqtt.url)
    data["influx"]["url"] = redact_url(settings.influx.url)
    if settings.alerts.store.startswith("postgresql:"):
        data["alerts"]["store"] = redact_url(settings.alerts.store)
    receivers = settings.alerts.receivers
    for receiver, dumped in zip(receivers, data["alerts"]["receivers"], strict=True):
        dumped["url"] = redact_url(receiver.url)
    return data

"""Who may connect to the broker and what each may publish: the shipped ACL
(config/mosquitto.acl, shipped as package data), one principal per on-site unit panel,
and password files.

Principals:
    {device id}            a device: its own data and status only
    unit@{unit id}         a unit's on-site panel: reads the unit's alert state, writes
                           its acks. "@" is in no device id (registry.DEVICE_ID_PATTERN),
                           so no device can ever hold a panel's name or rights.
    smartunit-collector    the collector
    smartunit-simulator    the simulator (demo only; without a password it cannot sign in)
    smartunit-observer     read-only, for people watching the traffic

Mosquitto's ``pattern`` lines apply to every user, so a panel's rights cannot be one
pattern: each unit gets its own ``user`` block, generated from the registry
(``smartunit broker-acl``).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from collector.alerts.model import is_pseudo_unit
from collector.errors import ConfigError
from collector.unitlink import UNIT_TOPIC_ROOT
from fieldtools.localservices import find_binary
from fieldtools.shipped import SHIPPED_ACL, read_shipped

COLLECTOR_USER = "smartunit-collector"
SIMULATOR_USER = "smartunit-simulator"
OBSERVER_USER = "smartunit-observer"
PANEL_USER_PREFIX = "unit@"


def panel_user(unit_id: str) -> str:
    """The broker user name of a unit's on-site panel."""
    return f"{PANEL_USER_PREFIX}{unit_id}"


def panel_acl(unit_ids: Iterable[str]) -> str:
    """One ``user`` block per unit: its panel reads the unit's alert state, writes acks."""
    blocks = []
    for unit in sorted(set(unit_ids)):
        # a registry unit id is already a single topic level (registry.UnitId); ":" would
        # end the user name in Mosquitto's password file, a line break the ACL line
        if is_pseudo_unit(unit) or any(c in unit for c in "/+#:\n\r\x00"):
            raise ConfigError(f"unit {unit!r} cannot have an on-site panel principal")
        blocks.append(
            f"user {panel_user(unit)}\n"
            f"topic read {UNIT_TOPIC_ROOT}/{unit}/alert\n"
            f"topic write {UNIT_TOPIC_ROOT}/{unit}/ack\n"
        )
    return "\n".join(blocks)


def broker_acl(unit_ids: Iterable[str]) -> str:
    """The shipped ACL followed by a panel block for each of these units."""
    panels = panel_acl(unit_ids)
    header = "\n# On-site panels, one principal per unit (smartunit broker-acl)\n"
    return read_shipped(SHIPPED_ACL) + (header + panels if panels else "")


def write_password_file(path: Path, users: Mapping[str, str]) -> None:
    """A Mosquitto password file for ``users`` (name -> password), readable by us alone.

    The passwords go through a file, hashed in place by ``mosquitto_passwd -U``, never on
    a command line where other users could read them."""
    for name in users:
        if not name or ":" in name or "\n" in name:
            raise ConfigError(f"{name!r} cannot be a Mosquitto user name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as plain:
        plain.writelines(f"{name}:{password}\n" for name, password in users.items())
    subprocess.run(
        [find_binary("mosquitto_passwd"), "-U", str(path)],
        check=True,
        capture_output=True,
    )


def write_credentials(path: Path, users: Mapping[str, str]) -> None:
    """The plain passwords of a demo's users, for the person running it: readable by
    us alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as plain:
        plain.writelines(f"{name} {password}\n" for name, password in users.items())

"""The configuration shipped inside the package, found through importlib.resources: the
sample service configuration, the example registry, the rule presets and the Mosquitto
configuration and ACL.

The originals are the repository's ``config/`` directory, the documented samples;
``fieldtools/config/`` holds symlinks to them, which the wheel build replaces with the
files themselves. One copy in the checkout, a complete one in an installed package.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib.resources import as_file, files
from pathlib import Path

from collector.errors import ConfigError

SAMPLE_CONFIG = "smartunit.example.toml"
SHIPPED_ACL = "mosquitto.acl"


@contextlib.contextmanager
def shipped_config_dir() -> Iterator[Path]:
    """The directory of shipped files, on the file system for the ``with`` block.

    A directory, not single files: the sample configuration names the registry and the
    presets relative to itself, so they must sit side by side."""
    with as_file(files("fieldtools") / "config") as directory:
        if not (directory / SAMPLE_CONFIG).is_file():
            raise ConfigError(f"the shipped configuration is missing from {directory}")
        yield directory


def read_shipped(name: str) -> str:
    """The text of one shipped file."""
    return (files("fieldtools") / "config" / name).read_text(encoding="utf-8")

"""Detector names -> classes. Configuration names detectors; an unknown name fails at load."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from detectors.base import Detector

DETECTORS: dict[str, type[Detector]] = {}

D = TypeVar("D", bound=type[Detector])


class UnknownDetectorError(ValueError):
    """A configuration names a detector that does not exist."""


def register(cls: D) -> D:
    if cls.name in DETECTORS:
        raise ValueError(f"detector {cls.name!r} registered twice")
    DETECTORS[cls.name] = cls
    return cls


def create(name: str, **params: Any) -> Detector:
    """A new detector by its configuration name, with keyword parameters."""
    try:
        cls = DETECTORS[name]
    except KeyError:
        known = ", ".join(sorted(DETECTORS))
        raise UnknownDetectorError(f"unknown detector {name!r}; known: {known}") from None
    factory: Callable[..., Detector] = cls
    return factory(**params)

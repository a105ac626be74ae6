"""Detector names -> classes. Configuration names detectors; an unknown name fails at load."""

from __future__ import annotations

import difflib
import inspect
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
    problem = parameter_problem(cls, params)
    if problem:
        raise ValueError(problem)
    factory: Callable[..., Detector] = cls
    return factory(**params)


def parameter_problem(cls: type[Detector], params: dict[str, Any]) -> str | None:
    """The first parameter a detector does not have, in a configuration's words (its
    constructor's own TypeError names a Python function, not the setting)."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # a constructor Python cannot describe
        return None
    named = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY
    takes = [p.name for p in signature.parameters.values() if p.kind in named]
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        for name in params:
            if name not in takes:
                close = difflib.get_close_matches(name, takes, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                listed = ", ".join(takes) or "none"
                return f"detector {cls.name!r} has no parameter {name!r}{hint} (it has: {listed})"
    return None

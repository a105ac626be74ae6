"""Rule configuration: which detector watches which quantity, with what limits.

Rules live in TOML files (``config/rules.presets.toml`` ships the domain presets); each
``[[rules]]`` entry names a family, a quantity (``*`` for any), a detector from the
registry and its parameters. Loading builds every detector once, so an unknown detector
or a bad parameter fails at start and names the rule.

Which rules apply to a series: per rule ``name``, the most specific match wins — a rule
listing the device, over one listing the device's unit, over one listing neither; among
equals, the later file (a user's file after the presets). ``enabled = false`` switches a
rule off where it matches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from collector.configerrors import Problem, describe, did_you_mean
from collector.configfile import format_validation_errors, read_toml
from collector.errors import ConfigError
from collector.families import known_family
from collector.lineprotocol import check_tag_text
from collector.registry import Registry
from detectors.base import Detector
from detectors.registry import DETECTORS, create

# The series context (``Detector.context_fields``) the registry gives a rule's detector.
SERIES_CONTEXT = frozenset({"capacity"})


def _known_detector(name: str) -> str:
    if name not in DETECTORS:
        known = ", ".join(sorted(DETECTORS))
        raise ValueError(
            f"unknown detector {name!r}{did_you_mean(name, DETECTORS)} (known: {known})"
        )
    return name


def _tag_text(name: str) -> str:
    problem = check_tag_text(name)  # rule names become tags of stored detections
    if problem:
        raise ValueError(problem)
    return name


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, AfterValidator(_tag_text)]
    description: str = ""
    family: Annotated[str, AfterValidator(known_family)]
    quantity: str = Field(min_length=1)
    detector: Annotated[str, AfterValidator(_known_detector)]
    params: dict[str, Any] = Field(default={}, validate_default=True)
    units: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    enabled: bool = True
    capacity_from: Literal["safe_capacity", "capacity"] | None = None

    @field_validator("params")
    @classmethod
    def _buildable(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Builds the detector once, so that a bad parameter fails at load, on its line."""
        detector = info.data.get("detector")
        if detector is not None:  # else its own error is reported
            try:
                create(detector, **params)
            except (TypeError, ValueError) as exc:
                raise ValueError(str(exc)) from None
        return params

    @model_validator(mode="after")
    def _context_known(self) -> RuleSpec:
        context = DETECTORS[self.detector].context_fields
        if context - SERIES_CONTEXT:
            raise ValueError(f"no series context {sorted(context - SERIES_CONTEXT)} for rules")
        if ("capacity" in context) != (self.capacity_from is not None):
            raise ValueError("capacity rules, and only they, need capacity_from")
        return self

    def build(self) -> Detector:
        return create(self.detector, **self.params)

    def specificity(self, unit: str, device: str) -> int | None:
        """3 device, 2 unit, 1 general; None when the rule does not cover this series."""
        if self.devices:
            return 3 if device in self.devices else None
        if self.units:
            return 2 if unit in self.units else None
        return 1

    def covers(self, family: str, quantity: str) -> bool:
        return self.family == family and self.quantity in ("*", quantity)


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rules: list[RuleSpec] = []


MAX_CACHED_QUANTITIES = 10_000  # (family, quantity) pairs; quantity names come from devices


@dataclass(frozen=True)
class RuleBook:
    rules: tuple[RuleSpec, ...]
    # (family, quantity) -> the rules covering it, with their order, and the answer for
    # every series of that pair when none of those rules lists units or devices (else
    # None). A new series (10,000 arrive at once when a collector restarts on a backlog)
    # then costs a dictionary lookup instead of a pass over every rule.
    _by_quantity: dict[
        tuple[str, str], tuple[tuple[tuple[int, RuleSpec], ...], tuple[RuleSpec, ...] | None]
    ] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def load(cls, paths: Sequence[Path]) -> RuleBook:
        specs: list[RuleSpec] = []
        for path in paths:
            raw = read_toml(path, "rules")
            try:
                specs += RuleFile.model_validate(raw).rules
            except ValidationError as exc:
                heading = f"invalid rules in {path}:"
                message = format_validation_errors(exc, heading, model=RuleFile, path=path)
                raise ConfigError(message) from None
        return cls(tuple(specs))

    def rules_for(self, family: str, quantity: str, unit: str, device: str) -> list[RuleSpec]:
        covering, everywhere = self._covering(family, quantity)
        if everywhere is not None:
            return list(everywhere)
        return self._choose(covering, unit, device)

    def rules_everywhere(self, family: str, quantity: str) -> tuple[RuleSpec, ...] | None:
        """``rules_for`` of every series of (family, quantity) when no rule covering it
        lists units or devices; None when the unit or device decides."""
        return self._covering(family, quantity)[1]

    def _covering(
        self, family: str, quantity: str
    ) -> tuple[tuple[tuple[int, RuleSpec], ...], tuple[RuleSpec, ...] | None]:
        key = (family, quantity)
        found = self._by_quantity.get(key)
        if found is None:
            if len(self._by_quantity) >= MAX_CACHED_QUANTITIES:
                self._by_quantity.clear()
            covering = tuple(
                (order, rule)
                for order, rule in enumerate(self.rules)
                if rule.covers(family, quantity)
            )
            placed = any(rule.units or rule.devices for _, rule in covering)
            # no rule names a unit or device: every one is as specific anywhere
            everywhere = None if placed else tuple(self._choose(covering, "", ""))
            found = self._by_quantity[key] = (covering, everywhere)
        return found

    @staticmethod
    def _choose(covering: Iterable[tuple[int, RuleSpec]], unit: str, device: str) -> list[RuleSpec]:
        best: dict[str, tuple[int, int, RuleSpec]] = {}
        for order, rule in covering:
            level = rule.specificity(unit, device)
            if level is None:
                continue
            current = best.get(rule.name)
            if current is None or (level, order) >= current[:2]:
                best[rule.name] = (level, order, rule)
        return [
            rule for _, _, rule in sorted(best.values(), key=lambda item: item[1]) if rule.enabled
        ]

    def rules_for_quantity(self, quantity: str) -> list[RuleSpec]:
        """The general (not unit- or device-specific) rules of a quantity, any family."""
        best: dict[str, RuleSpec] = {}
        for rule in self.rules:
            if rule.quantity in ("*", quantity) and not rule.units and not rule.devices:
                best[rule.name] = rule
        return [rule for rule in best.values() if rule.enabled]

    def names(self) -> Iterable[str]:
        return sorted({rule.name for rule in self.rules})


def units_unknown_to(registry: Registry, paths: Sequence[Path]) -> list[str]:
    """A warning for each rule file whose rules name units the registry does not hold:
    such a rule applies nowhere, most often because of a typo."""
    warnings = []
    for path in paths:
        parsed = RuleFile.model_validate(read_toml(path, "rules"))
        problems = [
            Problem(
                ("rules", index, "units"),
                f"rule {rule.name!r} names unknown unit {unit!r}"
                f"{did_you_mean(unit, registry.units)}, so it applies to no unit of that name",
            )
            for index, rule in enumerate(parsed.rules)
            for unit in rule.units
            if unit not in registry.units
        ]
        if problems:
            warnings.append(describe(f"warning: rules in {path}:", problems, path))
    return warnings

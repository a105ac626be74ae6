"""Choosing the default chain's parameters honestly: a grid, scored by category.

The development split has seven NAB categories. A default fitted to all of them says
little about data it has not seen, so the grid is judged three ways:

- leave one category out: for each category, the grid point that scores best on the
  *other* categories is chosen and scored on the one left out (nested: the figure is
  what choosing defaults this way would score on a new kind of data);
- the cross-validated mean of each grid point (its score averaged over the categories,
  each scored on its own): the shipped defaults are the grid point where it is highest;
- the spread: each parameter moved alone from the defaults, the rest kept.

Every grid point is a full chain. The chain scores the largest of its parts and each
part is independent of the others, so each part runs once per value of its own
parameter and grid points are assembled from those scores (checked against the real
chain at the defaults). Alerts are as shipped: the decider's onsets.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.evaluation import PROFILES, AlertScorer, LabelledSeries, normalised
from collector.backtest import SeriesFile, run_chain
from detectors.auto import PARTS
from detectors.chain import Chain


@dataclass(frozen=True)
class Knob:
    """One parameter of the default chain, the values the grid tries, its default."""

    name: str
    part: str | None  # the auto part it changes; None: the decider
    values: tuple[float, ...]
    default: float

    def params(self, value: float) -> dict[str, Any]:
        """Chain.from_config keywords setting this knob."""
        if self.name == "noise_multiple":
            return {"noise_multiple": value}
        if self.name == "shift.z":
            return {"shift": {"z": value}}
        if self.name == "cycle.z":
            return {"cycle": {"z": value}}
        if self.name == "sequence.p_alert":
            return {"sequence": {"likelihood": {"p_alert": value}}}
        if self.name == "clear_after":
            return {"decide": {"clear_after": int(value)}}
        raise ValueError(self.name)


# The defaults in detectors/ must be the ``default`` here (checked when the bench runs).
KNOBS = (
    Knob("noise_multiple", "raw", (0.45, 0.6, 0.8), 0.6),
    Knob("shift.z", "shift", (5.5, 6.5, 7.5), 6.5),
    Knob("cycle.z", "cycle", (8.0, 10.0, 12.0), 10.0),
    Knob("sequence.p_alert", "sequence", (1e-8, 1e-10, 1e-12), 1e-10),
    Knob("clear_after", None, (5.0, 8.0, 12.0), 8.0),
)
ON = 0.5  # the decider's alert level


def alert_rows(score: np.ndarray, clear_after: int) -> np.ndarray:
    """Onsets of ``AlertDecider(on=0.5, clear_after=...)`` on one series: a reading at
    or above 0.5 opens an alert unless one is open, and an open alert closes after
    ``clear_after`` readings below 0.5 in a row."""
    above = np.flatnonzero(score >= ON)
    if len(above) == 0:
        return above
    gap = np.diff(above) - 1
    return above[np.concatenate(([True], gap >= clear_after))]


GUARD_ALERTS = 6  # at most, on each of the two noise fleets (tests/test_auto_detector.py)


def noise_fleets(n: int = 4000, count: int = 20) -> list[list[SeriesFile]]:
    """The promise tests/test_auto_detector.py keeps: 20 series of noise with a daily
    cycle and 20 without, two weeks at 5-minute readings, raise at most GUARD_ALERTS."""
    t = np.arange(n) * 300.0
    day = 288

    def cyclic(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return 50 + np.sin(np.arange(n) / day * 2 * np.pi) * 10 + rng.normal(0, 1, n)

    def plain(seed: int) -> np.ndarray:
        return np.random.default_rng(seed + 100).normal(50, 3, n)

    return [
        [SeriesFile(Path(f"{make.__name__}/{seed}"), [], t, make(seed)) for seed in range(count)]
        for make in (cyclic, plain)
    ]


@dataclass
class GridResult:
    points: list[tuple[float, ...]]  # one value per knob
    raw: np.ndarray  # (points, files): NAB raw score, standard profile
    categories: list[str]
    category_of: np.ndarray  # per file: index into categories
    windows: np.ndarray  # per file
    alerts: np.ndarray  # (points, files): alert count
    guard: np.ndarray  # (points, 2): alerts on the two noise fleets

    def allowed(self, point: int) -> bool:
        """Quiet on noise: the noise fleets' promise, and no alert on NAB's anomaly-free files."""
        quiet = self.categories.index("artificialNoAnomaly")
        return bool(
            self.guard[point].max() <= GUARD_ALERTS
            and self.alerts[point, self.category_of == quiet].sum() == 0
        )

    def score(self, point: int, files: np.ndarray) -> float:
        return normalised(float(self.raw[point, files].sum()), int(self.windows[files].sum()))

    def category_scores(self, point: int) -> dict[str, float]:
        out = {}
        for k, name in enumerate(self.categories):
            files = self.category_of == k
            if self.windows[files].sum():
                out[name] = self.score(point, files)
        return out

    def cv_mean(self, point: int) -> float:
        return float(np.mean(list(self.category_scores(point).values())))


def run_grid(corpus: Sequence[LabelledSeries], nab_files: Sequence[SeriesFile]) -> GridResult:
    knob_of_part = {k.part: k for k in KNOBS if k.part}
    guards = noise_fleets()
    files = [*nab_files, *guards[0], *guards[1]]
    part_scores: dict[tuple[str, float], list[np.ndarray]] = {}
    for part in PARTS:
        knob = knob_of_part.get(part)
        for value in knob.values if knob else (0.0,):
            params = knob.params(value) if knob else {}
            outputs = run_chain(files, Chain.from_config(parts=(part,), **params))
            part_scores[(part, value)] = [o.score for o in outputs]
    scorers = [AlertScorer(s, PROFILES["standard"]) for s in corpus]
    points = list(itertools.product(*(k.values for k in KNOBS)))
    raw = np.zeros((len(points), len(corpus)))
    alerts = np.zeros((len(points), len(corpus)), dtype=np.int64)
    guard = np.zeros((len(points), 2), dtype=np.int64)
    clear_index = [k.name for k in KNOBS].index("clear_after")
    group_of = [-1] * len(corpus) + [0] * len(guards[0]) + [1] * len(guards[1])
    for p, point in enumerate(points):
        chosen = dict(zip((k.name for k in KNOBS), point, strict=True))
        for f in range(len(files)):
            score = np.maximum.reduce(
                [
                    part_scores[
                        (part, chosen[knob_of_part[part].name] if part in knob_of_part else 0.0)
                    ][f]
                    for part in PARTS
                ]
            )
            rows = alert_rows(score, int(point[clear_index]))
            if f < len(corpus):
                raw[p, f] = scorers[f].score(rows)
                alerts[p, f] = len(rows)
            else:
                guard[p, group_of[f]] += len(rows)
    categories = sorted({s.name.split("/")[0] for s in corpus})
    category_of = np.array([categories.index(s.name.split("/")[0]) for s in corpus])
    windows = np.array([len(s.windows) for s in corpus])
    return GridResult(points, raw, categories, category_of, windows, alerts, guard)


def default_point() -> tuple[float, ...]:
    return tuple(k.default for k in KNOBS)


def _describe(point: tuple[float, ...]) -> str:
    changed = [f"{k.name}={v:g}" for k, v in zip(KNOBS, point, strict=True) if v != k.default]
    return ", ".join(changed) or "the defaults"


def report_grid(grid: GridResult) -> dict[str, float]:
    """Print the folds, the cross-validated choice and the spread; return key figures."""
    default = grid.points.index(default_point())
    everything = np.ones(len(grid.windows), dtype=bool)
    print(
        f"Leave one category out ({len(grid.points)} grid points; defaults chosen on the other "
        "categories, scored on the one left out):"
    )
    folds = []
    for k, name in enumerate(grid.categories):
        left_out = grid.category_of == k
        training = [
            grid.score(p, ~left_out) if grid.allowed(p) else -np.inf
            for p in range(len(grid.points))
        ]
        best = int(np.argmax(training))
        if grid.windows[left_out].sum() == 0:
            print(
                f"  {name:22s} no windows: {int(grid.alerts[best, left_out].sum())} alert(s) "
                f"with the point chosen on the others ({_describe(grid.points[best])})"
            )
            continue
        held = grid.score(best, left_out)
        folds.append(held)
        print(
            f"  {name:22s} {held:6.2f}   (defaults {grid.score(default, left_out):6.2f}; "
            f"chosen: {_describe(grid.points[best])})"
        )
    fold_mean = float(np.mean(folds))
    print(f"  mean of the {len(folds)} folds: {fold_mean:.2f}")

    cv = np.array([grid.cv_mean(p) for p in range(len(grid.points))])
    allowed = np.array([grid.allowed(p) for p in range(len(grid.points))])
    best = int(np.argmax(np.where(allowed, cv, -np.inf)))
    rank = int((allowed & (cv > cv[default])).sum()) + 1
    print(
        f"Cross-validated mean (each category scored on its own, averaged), among the "
        f"{int(allowed.sum())} grid points quiet on noise (at most {GUARD_ALERTS} alerts on each "
        f"noise fleet of tests/test_auto_detector.py, none on artificialNoAnomaly): defaults "
        f"{cv[default]:.2f} (rank {rank}); best {cv[best]:.2f} at {_describe(grid.points[best])}"
    )
    unconstrained = int(np.argmax(cv))
    print(
        f"  without the noise guard the best would be {cv[unconstrained]:.2f} at "
        f"{_describe(grid.points[unconstrained])}, with "
        f"{grid.guard[unconstrained].tolist()} alerts on the noise fleets"
    )
    print(
        "Spread: each parameter moved alone from the defaults (dev split / CV mean; "
        "* the default, ! too noisy):"
    )
    for index, knob in enumerate(KNOBS):
        cells = []
        for value in knob.values:
            point = list(default_point())
            point[index] = value
            p = grid.points.index(tuple(point))
            mark = "*" if value == knob.default else " "
            noisy = "" if grid.allowed(p) else "!"
            cells.append(f"{value:g}{mark}{noisy} {grid.score(p, everything):5.1f}/{cv[p]:4.1f}")
        print(f"  {knob.name:17s} " + "   ".join(cells))
    return {
        "fold_mean": fold_mean,
        "cv_mean_defaults": float(cv[default]),
        "cv_best": float(cv[best]),
        "dev_defaults": grid.score(default, everything),
    }

"""Detector evaluation: NAB v1.1 scoring and the SKAB outlier metrics, in numpy.

NAB (Numenta Anomaly Benchmark) v1.1, per file of N rows with anomaly scores a_i:

- rows before ``min(floor(0.15 N), 750)`` (probation) are never detections;
- row i is a detection when a_i >= theta;
- a labelled window [L, R] (rows, inclusive, w = R - L + 1) is worth
  ``A_TP * s(-(R - i + 1) / w) / s(-1)`` for its earliest detection i, and ``-A_FN`` if it
  has none (a window inside probation can only be missed);
- a detection outside every window costs ``A_FP * s((i - R) / (w - 1))`` with R, w of the
  nearest window that ended before it, or ``-A_FP`` when no window did;
- ``s(y) = 2 / (1 + exp(5 y)) - 1`` (``-1`` for y > 3).

The corpus score S is the sum over files, normalised as
``100 (S - S_null) / (S_perfect - S_null)`` with ``S_perfect = A_TP * windows`` and
``S_null = -A_FN * windows``. The published scoreboard picks theta per profile to
maximise S; ``oracle_score`` finds that maximum exactly (S is a step function of theta,
so the distinct score values are the only candidates). tests/test_nab_scoring.py checks
this against published results.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Profile:
    tp: float
    fp: float
    fn: float


PROFILES: dict[str, Profile] = {
    "standard": Profile(tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP_rate": Profile(tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN_rate": Profile(tp=1.0, fp=0.11, fn=2.0),
}

PROBATION_FRACTION = 0.15
PROBATION_MAX_ROWS = 750


def scaled_sigmoid(y: FloatArray | float) -> FloatArray:
    y = np.asarray(y, dtype=np.float64)
    with np.errstate(over="ignore"):
        out = 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0
    return np.where(y > 3.0, -1.0, out)


_S_MINUS_ONE = float(scaled_sigmoid(-1.0))


@dataclass(frozen=True)
class LabelledSeries:
    """One NAB data file: its values and its anomaly windows as row ranges."""

    name: str
    timestamps: NDArray[np.datetime64]
    values: FloatArray
    windows: tuple[tuple[int, int], ...]  # inclusive row ranges

    @property
    def probation(self) -> int:
        n = len(self.values)
        return int(min(np.floor(PROBATION_FRACTION * n), PROBATION_MAX_ROWS))


def find_bench_data(start: Path) -> Path | None:
    """The nearest ``shared/bench`` beside ``start`` or one of its parents (a checkout
    sits beside ``shared``; a worktree may sit one level deeper)."""
    for folder in [start, *start.parents]:
        candidate = folder / "shared" / "bench"
        if candidate.is_dir():
            return candidate
    return None


def read_timestamp_value_csv(path: Path) -> tuple[NDArray[np.datetime64], FloatArray]:
    """A ``timestamp,value`` CSV as (datetime64[ms] array, float array)."""
    stamps: list[str] = []
    values: list[float] = []
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for row in reader:
            if not row:
                continue
            stamps.append(row[0].strip().replace(" ", "T"))
            values.append(float(row[1]))
    return np.array(stamps, dtype="datetime64[ms]"), np.array(values, dtype=np.float64)


def load_nab(root: Path) -> list[LabelledSeries]:
    """Every data file under ``root/data`` that ``root/windows.json`` labels, sorted by name."""
    labels: dict[str, list[list[str]]] = json.loads((root / "windows.json").read_text())
    corpus = []
    for name in sorted(labels):
        stamps, values = read_timestamp_value_csv(root / "data" / name)
        windows = []
        for start, end in labels[name]:
            t1 = np.datetime64(start.replace(" ", "T"), "ms")
            t2 = np.datetime64(end.replace(" ", "T"), "ms")
            inside = np.flatnonzero((stamps >= t1) & (stamps <= t2))
            if len(inside):
                windows.append((int(inside[0]), int(inside[-1])))
        corpus.append(LabelledSeries(name, stamps, values, tuple(windows)))
    return corpus


class _FileScorer:
    """S(theta) of one file for many thresholds at once."""

    def __init__(self, series: LabelledSeries, scores: FloatArray, profile: Profile) -> None:
        n = len(series.values)
        if len(scores) != n:
            raise ValueError(f"{series.name}: {len(scores)} scores for {n} rows")
        probation = series.probation
        in_window = np.zeros(n, dtype=bool)
        self.windows: list[tuple[FloatArray, FloatArray]] = []
        for left, right in series.windows:
            in_window[left : right + 1] = True
            width = right - left + 1
            rows = np.arange(max(left, probation), right + 1)
            running_max = np.maximum.accumulate(scores[rows]) if len(rows) else np.empty(0)
            worth = profile.tp * scaled_sigmoid(-(right - rows + 1) / width) / _S_MINUS_ONE
            self.windows.append((running_max, worth))
        self.fn = profile.fn

        outside = np.flatnonzero(~in_window)
        outside = outside[outside >= probation]
        costs = np.full(len(outside), -profile.fp)
        ends = np.array([right for _, right in series.windows], dtype=np.int64)
        widths = np.array([right - left + 1 for left, right in series.windows], dtype=np.int64)
        if len(ends):
            order = np.argsort(ends)
            ends, widths = ends[order], widths[order]
            preceding = np.searchsorted(ends, outside, side="left") - 1
            has = preceding >= 0
            r = ends[preceding[has]]
            w = widths[preceding[has]]
            position = (outside[has] - r) / np.maximum(w - 1, 1)
            costs[has] = profile.fp * scaled_sigmoid(position)
        order = np.argsort(scores[outside], kind="stable")
        self.fp_scores = scores[outside][order]
        # suffix sums: cost of every outside detection with score >= threshold
        self.fp_suffix = np.concatenate([np.cumsum(costs[order][::-1])[::-1], [0.0]])

    def score(self, thresholds: FloatArray) -> FloatArray:
        first = np.searchsorted(self.fp_scores, thresholds, side="left")
        total = self.fp_suffix[first].copy()
        for running_max, worth in self.windows:
            k = np.searchsorted(running_max, thresholds, side="left")
            hit = k < len(running_max)
            total += np.where(
                hit, worth[np.minimum(k, max(len(worth) - 1, 0))] if len(worth) else 0.0, -self.fn
            )
        return total


@dataclass(frozen=True)
class NabResult:
    profile: str
    threshold: float
    raw: float
    normalised: float


def _normalise(raw: float, windows: int, profile: Profile) -> float:
    perfect, null = profile.tp * windows, -profile.fn * windows
    return 100.0 * (raw - null) / (perfect - null)


def nab_score(
    corpus: Sequence[LabelledSeries],
    scores: Sequence[FloatArray],
    profile_name: str,
    threshold: float,
) -> NabResult:
    """The NAB score of detections ``score >= threshold``."""
    profile = PROFILES[profile_name]
    thetas = np.array([threshold])
    raw = sum(
        float(_FileScorer(s, a, profile).score(thetas)[0])
        for s, a in zip(corpus, scores, strict=True)
    )
    windows = sum(len(s.windows) for s in corpus)
    return NabResult(profile_name, threshold, raw, _normalise(raw, windows, profile))


def oracle_score(
    corpus: Sequence[LabelledSeries], scores: Sequence[FloatArray], profile_name: str
) -> NabResult:
    """The best NAB score over every threshold (the published scoreboard's convention)."""
    profile = PROFILES[profile_name]
    scorers = [
        _FileScorer(s, np.asarray(a, dtype=np.float64), profile)
        for s, a in zip(corpus, scores, strict=True)
    ]
    candidates = np.unique(np.concatenate([np.asarray(a, dtype=np.float64) for a in scores]))
    candidates = np.append(candidates, np.inf)  # no detections at all
    total = np.zeros(len(candidates))
    for scorer in scorers:
        total += scorer.score(candidates)
    best = int(np.argmax(total))
    windows = sum(len(s.windows) for s in corpus)
    return NabResult(
        profile_name,
        float(candidates[best]),
        float(total[best]),
        _normalise(float(total[best]), windows, profile),
    )


@dataclass(frozen=True)
class OutlierMetrics:
    """SKAB's outlier metrics over all scored rows."""

    f1: float
    far: float  # false alarm rate FP / (FP + TN)
    mar: float  # missed alarm rate FN / (FN + TP)
    tp: int
    fp: int
    fn: int
    tn: int


def outlier_metrics(
    truth: Iterable[NDArray[np.bool_]], predicted: Iterable[NDArray[np.bool_]]
) -> OutlierMetrics:
    tp = fp = fn = tn = 0
    for actual, guess in zip(truth, predicted, strict=True):
        tp += int(np.sum(actual & guess))
        fp += int(np.sum(~actual & guess))
        fn += int(np.sum(actual & ~guess))
        tn += int(np.sum(~actual & ~guess))
    f1 = tp / (tp + (fp + fn) / 2) if tp + fp + fn else 1.0
    far = fp / (fp + tn) if fp + tn else 0.0
    mar = fn / (fn + tp) if fn + tp else 0.0
    return OutlierMetrics(f1, far, mar, tp, fp, fn, tn)


class AlertScorer:
    """The NAB raw score of one file's 0/1 alert column, fast enough for a grid search.

    Same rules as ``nab_score`` at threshold 0.5 on alerts: what each row would be worth
    as a detection is worked out once, so scoring an alert column only looks at its
    alerts (tests/test_nab_scoring.py checks both agree).
    """

    def __init__(self, series: LabelledSeries, profile: Profile) -> None:
        n = len(series.values)
        probation = series.probation
        self.fn = profile.fn
        self.window_of = np.full(n, -1, dtype=np.int64)
        self.worth = np.zeros(n)
        for k, (left, right) in enumerate(series.windows):
            rows = np.arange(max(left, probation), right + 1)
            self.window_of[rows] = k
            self.window_of[left : right + 1] = np.where(
                np.arange(left, right + 1) < probation, -2, k
            )
            self.worth[rows] = profile.tp * scaled_sigmoid(-(right - rows + 1) / (right - left + 1))
            self.worth[rows] /= _S_MINUS_ONE
        self.windows = len(series.windows)
        # outside every window: the cost of a false positive on each row
        cost = np.full(n, -profile.fp)
        ends = np.array([right for _, right in series.windows], dtype=np.int64)
        widths = np.array([right - left + 1 for left, right in series.windows], dtype=np.int64)
        rows = np.arange(n)
        if len(ends):
            order = np.argsort(ends)
            ends, widths = ends[order], widths[order]
            preceding = np.searchsorted(ends, rows, side="left") - 1
            has = preceding >= 0
            position = (rows[has] - ends[preceding[has]]) / np.maximum(
                widths[preceding[has]] - 1, 1
            )
            cost[has] = profile.fp * scaled_sigmoid(position)
        cost[:probation] = 0.0
        self.fp_cost = np.where(self.window_of == -1, cost, 0.0)

    def score(self, alert_rows: NDArray[np.int64]) -> float:
        """Raw score of alerts on ``alert_rows`` (row numbers, ascending)."""
        total = float(self.fp_cost[alert_rows].sum())
        hit = self.window_of[alert_rows]
        inside = hit >= 0
        found, first = np.unique(hit[inside], return_index=True)
        total += float(self.worth[alert_rows[inside][first]].sum())
        return total - self.fn * (self.windows - len(found))


def normalised(raw: float, windows: int, profile_name: str = "standard") -> float:
    """A raw NAB score as the scoreboard shows it (0 = no detections, 100 = perfect)."""
    return _normalise(raw, windows, PROFILES[profile_name])

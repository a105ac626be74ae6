"""The NAB v1.1 scorer reproduces published results, and scores hand-made cases as specified."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from bench.evaluation import (
    PROFILES,
    LabelledSeries,
    find_bench_data,
    load_nab,
    nab_score,
    oracle_score,
    outlier_metrics,
)

NAB = (find_bench_data(Path(__file__).resolve().parent) or Path("shared/bench")) / "nab"

# ../shared/bench/README.md: oracle threshold, these 40 files.
PUBLISHED = {
    "numenta": (64.85, 57.36, 69.72),
    "contextOSE": (67.18, 63.30, 70.81),
}


@pytest.fixture(scope="module")
def corpus() -> list[LabelledSeries]:
    assert NAB.is_dir(), f"benchmark data missing: {NAB}"
    return load_nab(NAB)


def reference_scores(corpus: list[LabelledSeries], detector: str) -> list[np.ndarray]:
    out = []
    for series in corpus:
        with (NAB / "reference" / detector / series.name).open() as handle:
            out.append(np.array([float(r["anomaly_score"]) for r in csv.DictReader(handle)]))
    return out


@pytest.mark.parametrize("detector", sorted(PUBLISHED))
def test_reference_detectors_score_as_published(corpus, detector: str) -> None:
    scores = reference_scores(corpus, detector)
    found = tuple(round(oracle_score(corpus, scores, p).normalised, 2) for p in PROFILES)
    assert found == pytest.approx(PUBLISHED[detector], abs=0.005)


def test_corpus_shape(corpus) -> None:
    assert len(corpus) == 40
    assert sum(len(s.windows) for s in corpus) == 73


def _series(n: int, windows: tuple[tuple[int, int], ...]) -> LabelledSeries:
    stamps = np.arange(n).astype("datetime64[m]").astype("datetime64[ms]")
    return LabelledSeries("hand/made.csv", stamps, np.zeros(n), windows)


def test_perfect_null_and_late_detections() -> None:
    series = _series(1000, ((500, 599),))  # probation: 150 rows
    perfect = np.zeros(1000)
    perfect[500] = 1.0
    assert nab_score([series], [perfect], "standard", 0.5).normalised == pytest.approx(100.0)
    null = np.zeros(1000)
    assert nab_score([series], [null], "standard", 0.5).normalised == pytest.approx(0.0)
    late = np.zeros(1000)
    late[599] = 1.0  # the window's last row: s(-1/100)/s(-1), almost nothing
    assert 0 < nab_score([series], [late], "standard", 0.5).normalised < 55


def test_false_positives_cost_less_right_after_a_window() -> None:
    series = _series(1000, ((500, 599),))
    early = np.zeros(1000)
    early[300] = 1.0  # before any window: the full A_FP
    just_after = np.zeros(1000)
    just_after[600] = 1.0
    a = nab_score([series], [early], "standard", 0.5).raw
    b = nab_score([series], [just_after], "standard", 0.5).raw
    assert a == pytest.approx(-1.0 - 0.11)
    assert -1.0 - 0.11 < b < -1.0
    in_probation = np.zeros(1000)
    in_probation[100] = 1.0  # ignored
    assert nab_score([series], [in_probation], "standard", 0.5).raw == pytest.approx(-1.0)


def test_outlier_metrics() -> None:
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    guess = np.array([1, 1, 0, 1, 0, 0, 0, 0], dtype=bool)
    m = outlier_metrics([truth], [guess])
    assert (m.tp, m.fp, m.fn, m.tn) == (2, 1, 1, 4)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.far == pytest.approx(0.2)
    assert m.mar == pytest.approx(1 / 3)


def test_the_fast_alert_scorer_agrees_with_the_scorer(corpus) -> None:
    """bench/detectors.py searches its grid with AlertScorer: it must score as nab_score."""
    from bench.evaluation import AlertScorer

    rng = np.random.default_rng(2)
    for profile in PROFILES:
        alerts = [(rng.random(len(s.values)) < 0.002).astype(np.float64) for s in corpus]
        expected = nab_score(corpus, alerts, profile, 0.5).raw
        fast = sum(
            AlertScorer(s, PROFILES[profile]).score(np.flatnonzero(a))
            for s, a in zip(corpus, alerts, strict=True)
        )
        assert fast == pytest.approx(expected, abs=1e-9)

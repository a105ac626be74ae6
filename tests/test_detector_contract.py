"""One contract, every registered detector (river's pattern): whatever it detects, it must
score in [0, 1], never look ahead, be batch-invariant, survive save and restore, bring a
decider for its scores and take per-series context only through ``set_context``."""

from __future__ import annotations

import numpy as np
import pytest

import detectors  # noqa: F401 - registers every detector
from detectors.base import Detector, split_rounds
from detectors.registry import DETECTORS, UnknownDetectorError, create

NAMES = sorted(DETECTORS)


def workload(seed: int = 5, series: int = 7, per_series: int = 400):
    rng = np.random.default_rng(seed)
    sid = np.repeat(np.arange(series), per_series)
    t = np.tile(np.arange(per_series) * 300.0, series) + 1.7e9
    x = np.sin(t / 3600) * 10 + rng.normal(0, 1, len(t)) + sid * 5
    x[sid == 2] = 3.0  # a flat series
    x[(sid == 3) & (np.arange(len(t)) % per_series == 350)] = 500.0  # a spike
    x[(sid == 4) & (np.arange(len(t)) % per_series == 100)] = np.nan
    order = np.lexsort((sid, t))  # interleaved by time, as the collector sees them
    return sid[order], t[order], x[order]


def test_registry_knows_detectors_and_refuses_unknown_names() -> None:
    assert {
        "auto",
        "range_novelty",
        "threshold",
        "rate",
        "flatline",
        "out_of_range",
        "capacity",
    } <= set(DETECTORS)
    for name in NAMES:
        if DETECTORS[name].kind == "rule":
            own = DETECTORS[name].decider is not Detector.decider
            assert own, f"rule {name} brings its own decider"
    with pytest.raises(UnknownDetectorError, match="range_novelty"):
        create("no_such_detector")


@pytest.mark.parametrize("name", NAMES)
def test_scores_are_in_unit_interval_and_nan_scores_zero(name: str) -> None:
    sid, t, x = workload()
    scores = create(name).score(sid, t, x)
    assert scores.shape == x.shape
    assert np.all((scores >= 0) & (scores <= 1))
    assert np.all(scores[np.isnan(x)] == 0)


@pytest.mark.parametrize("name", NAMES)
def test_batching_does_not_change_scores(name: str) -> None:
    sid, t, x = workload()
    whole = create(name).score(sid, t, x)
    detector = create(name)
    pieces = [
        detector.score(sid[a : a + 97], t[a : a + 97], x[a : a + 97]) for a in range(0, len(x), 97)
    ]
    np.testing.assert_allclose(np.concatenate(pieces), whole)
    # one series at a time gives the same as interleaved
    detector = create(name)
    alone = np.empty_like(whole)
    for s in np.unique(sid):
        mask = sid == s
        alone[mask] = detector.score(sid[mask], t[mask], x[mask])
    np.testing.assert_allclose(alone, whole)


@pytest.mark.parametrize("name", NAMES)
def test_no_look_ahead(name: str) -> None:
    sid, t, x = workload()
    full = create(name).score(sid, t, x)
    changed = x.copy()
    changed[len(x) // 2 :] *= -3  # the future changes ...
    prefix = create(name).score(sid, t, changed)
    np.testing.assert_allclose(prefix[: len(x) // 2], full[: len(x) // 2])  # ... the past not


@pytest.mark.parametrize("name", NAMES)
def test_save_and_restore_continue_exactly(name: str) -> None:
    sid, t, x = workload()
    whole = create(name).score(sid, t, x)
    first = create(name)
    half = len(x) // 2
    head = first.score(sid[:half], t[:half], x[:half])
    saved = {k: v.copy() for k, v in first.state().items()}
    second = create(name)
    second.restore(saved)
    tail = second.score(sid[half:], t[half:], x[half:])
    np.testing.assert_allclose(np.concatenate([head, tail]), whole)


@pytest.mark.parametrize("name", NAMES)
def test_the_decider_turns_scores_into_colours(name: str) -> None:
    sid, t, x = workload()
    detector = create(name)
    if detector.context_fields:
        detector.set_context(np.unique(sid), **dict.fromkeys(detector.context_fields, 50.0))
    scores = detector.score(sid, t, x)
    decider = detector.decider()
    out = decider.decide(sid, t, scores)
    assert out.level.shape == x.shape
    assert np.all((out.level >= 0) & (out.level <= 4))
    assert np.all(out.level[out.onset] > 0)
    assert np.all(out.level[scores == 0] == 0)  # a score of 0 is never a colour
    # the decider's state survives save and restore like the detector's
    again = detector.decider()
    again.restore(decider.state())
    np.testing.assert_equal(again.state(), decider.state())
    if name in catching("spike"):
        spike = np.flatnonzero(x == 500.0)
        assert np.all(out.level[spike] > 0), f"{name}: its decider lets the spike pass"


@pytest.mark.parametrize("name", NAMES)
def test_context_comes_only_through_set_context_and_is_kept_in_the_state(name: str) -> None:
    sid, t, x = workload()
    detector = create(name)
    with pytest.raises(ValueError, match="no context"):
        detector.set_context([0], no_such_context=[1.0])
    if not detector.context_fields:
        return
    ids = np.unique(sid)
    without = create(name).score(sid, t, x)
    detector.set_context(ids, **dict.fromkeys(detector.context_fields, np.full(len(ids), 50.0)))
    half = len(x) // 2
    head = detector.score(sid[:half], t[:half], x[:half])
    restored = create(name)
    restored.restore(detector.state())  # the context travels with the saved state
    tail = restored.score(sid[half:], t[half:], x[half:])
    with_context = np.concatenate([head, tail])
    assert not np.allclose(with_context, without), f"{name}: context changes nothing"
    whole = create(name)
    whole.set_context(ids, **dict.fromkeys(detector.context_fields, np.full(len(ids), 50.0)))
    np.testing.assert_allclose(whole.score(sid, t, x), with_context)


def catching(what: str) -> list[str]:
    return [n for n in NAMES if what in DETECTORS[n].catches]


def test_every_statistical_detector_says_what_it_catches() -> None:
    for name in NAMES:
        if DETECTORS[name].kind == "statistical":
            assert DETECTORS[name].catches, name


@pytest.mark.parametrize("name", catching("spike"))
def test_a_spike_after_warmup_scores_high(name: str) -> None:
    sid, t, x = workload()
    scores = create(name).score(sid, t, x)
    spike = np.flatnonzero(x == 500.0)
    assert scores[spike].min() >= 0.5


def test_split_rounds_keeps_each_series_in_order() -> None:
    sid = np.array([3, 1, 3, 3, 1, 0])
    rounds = split_rounds(sid)
    assert [r.tolist() for r in rounds] == [[0, 1, 5], [2, 4], [3]]


def _days(n_days: int, per_day: int = 96, seed: int = 9):
    rng = np.random.default_rng(seed)
    n = n_days * per_day
    t = 1.7e9 + np.arange(n) * (86_400 / per_day)
    x = 100 + 60 * np.sin(np.arange(n) / per_day * 2 * np.pi) + rng.normal(0, 2, n)
    return np.zeros(n, dtype=np.int64), t, x


@pytest.mark.parametrize("name", catching("drift"))
def test_a_slow_drift_scores_high(name: str) -> None:
    rng = np.random.default_rng(4)
    n = 3000
    x = rng.normal(0, 1, n)
    x[2000:] += np.linspace(0, 4, n - 2000)  # a drift worth a few noise widths
    scores = create(name).score(np.zeros(n, dtype=np.int64), np.arange(n) * 60.0, x)
    assert scores[:2000].max() < 0.5
    assert scores[2000:].max() >= 0.5


@pytest.mark.parametrize("name", catching("seasonal"))
def test_the_wrong_value_for_the_time_of_day_scores_high(name: str) -> None:
    sid, t, x = _days(10)
    x[-30] = 100 - 60 * np.sin(len(x) / 96 * 2 * np.pi)  # the night's value at noon
    scores = create(name).score(sid, t, x)
    assert scores[-30] >= 0.5
    assert np.sort(scores[96 * 4 :])[-2] < 0.5  # nothing else after the bins have learned


@pytest.mark.parametrize("name", NAMES)
def test_a_rewind_moves_back_every_time_the_detector_holds(name: str) -> None:
    """A device clock set back re-anchors its series (collector/detection.py): no device
    time a detector keeps may stay after the anchor, or the series waits for it."""
    sid, t, x = workload()
    week = 7 * 86_400.0  # a shift every daily or weekly pattern ignores
    now, later = create(name), create(name)
    now.score(sid, t, x)
    later.score(sid, t + week, x)
    held_times = [
        key
        for key, value in now.state().items()
        if np.any(np.isfinite(value))
        and np.allclose(later.state()[key] - value, week, equal_nan=True)
    ]
    later.rewind(np.unique(sid), np.full(len(np.unique(sid)), t.min()))
    for key in held_times:
        kept = later.state()[key]
        assert np.all(np.isnan(kept) | (kept <= t.min())), f"{name}: {key} not rewound"
    scores = later.score(sid, t, x)  # in time order again from the anchor on
    assert np.all((scores >= 0) & (scores <= 1))

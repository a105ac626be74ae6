"""The default chain's promises: quiet on noise, loud on what is new."""

from __future__ import annotations

import numpy as np

from detectors.chain import Chain

DAY = 288  # readings at 5-minute intervals


def quiet_series(seed: int, n: int = 4000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 50 + np.sin(np.arange(n) / DAY * 2 * np.pi) * 10 + rng.normal(0, 1, n)


def run(values: np.ndarray) -> np.ndarray:
    n = len(values)
    out = Chain.from_config().process(np.zeros(n, dtype=np.int64), np.arange(n) * 300.0, values)
    return out.onset


def test_noise_with_a_daily_cycle_raises_almost_nothing() -> None:
    """Plain noise keeps setting records; the default chain must not alert on them."""
    n, count = 4000, 20
    values = np.stack([quiet_series(seed, n) for seed in range(count)], axis=1).ravel()
    series = np.tile(np.arange(count, dtype=np.int64), n)  # interleaved, as ingest sees them
    t = np.repeat(np.arange(n) * 300.0, count)
    alerts = int(Chain.from_config().process(series, t, values).onset.sum())
    assert alerts <= 2  # 20 series x 2 weeks: at most a couple of alerts in total


def test_spike_level_shift_and_drift_are_caught() -> None:
    spike = quiet_series(1)
    spike[3000] += 40
    shift = quiet_series(2)
    shift[3000:] += 15  # inside the old range at the daily peak, but sustained
    for values in (spike, shift):
        onsets = np.flatnonzero(run(values))
        assert len(onsets) >= 1
        assert 3000 <= onsets[0] < 3000 + DAY // 2


def test_nothing_is_raised_during_warm_up() -> None:
    values = quiet_series(3)
    values[100] += 1000  # before a day of data: the range means nothing yet
    assert not run(values)[:DAY].any()

"""Device clocks that step back: found, counted and logged, for the engine to re-anchor.

A reading older than its series' newest judged one is late and not judged. But when that
newest lies in the future of the collector's clock (one reading from the future, or a
device clock running ahead that NTP then set back), waiting for real time to catch up
would leave the series unjudged for as long as the clock was ahead: an alarm at real
time would go unseen. A reading more than ``tolerance_s`` older than such a newest is a
step back of its device's clock: every series of that device is re-anchored at the
reading (the detection engine moves its own and the detectors' times after it back to
it); each step is counted per device and logged (rate-limited).
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from collector.logs import RateLimitedLog
from collector.seriestable import SeriesTable

log = logging.getLogger(__name__)

CLOCK_LOG_INTERVAL_S = 10.0


class ClockSteps:
    def __init__(self, tolerance_s: float) -> None:
        self.tolerance_s = tolerance_s
        self.per_device: Counter[str] = Counter()
        self._log = RateLimitedLog(log, CLOCK_LOG_INTERVAL_S)

    def find(
        self,
        series: SeriesTable,
        newest: np.ndarray,
        ids: np.ndarray,
        times: np.ndarray,
        now: float,
    ) -> dict[int, tuple[float, list[int]]]:
        """Devices whose clock stepped back in this batch: device id -> (the earliest
        stepped-back time, the anchor; every series of the device).

        ``newest``: each series' newest judged time; ``ids``, ``times``: the batch's
        series and device times; ``now``: the collector's clock."""
        tolerance = self.tolerance_s
        newest_of_batch = newest[ids]
        stepped = (newest_of_batch > now + tolerance) & (newest_of_batch - times > tolerance)
        if not stepped.any():
            return {}
        anchor_of: dict[int, float] = {}
        for one, when in zip(ids[stepped].tolist(), times[stepped].tolist(), strict=True):
            device_id = series.device_id_of(one)
            anchor_of[device_id] = min(anchor_of.get(device_id, when), when)
        found: dict[int, tuple[float, list[int]]] = {}
        for device_id, anchor in anchor_of.items():
            device = series.device_names[device_id]
            members = series.series_of_device(device_id)
            found[device_id] = (anchor, members)
            self.per_device[device] += 1
            self._log.warning(
                "clock_step_back",
                "device clock stepped back: its series are re-anchored at its new time",
                device=device,
                step_s=round(float(newest[members].max()) - anchor, 3),
                steps_back=self.per_device[device],
            )
        return found

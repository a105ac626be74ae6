"""Silence (deadman): devices that stopped reporting, and gateways that took them along.

Unlike the other detectors this one judges the *absence* of readings, so it is asked on a
clock tick (``check(now)``) rather than per reading. A series is silent when its newest
reading's device time is older than its timeout plus ``allowance_s`` (time for late data
to arrive: transport, a gateway's store-and-forward); readings that arrive late with old
device times never move its newest time backwards. The timeout is ``timeout_s`` if
given, else ``interval_multiple`` times the series' own typical interval (learned), and
never less than ``minimum_s``.

Series can be grouped by gateway (``set_groups``). When every series of a group (with at
least ``min_members``) is silent at once, the gateway is reported silent once and its
members are not reported on their own: one alert for the gateway, not fifty.

When at least ``fleet_share`` of all series (and at least ``fleet_min`` of them) are
silent at once, the cause is upstream of the devices (the network, the broker, a bridge):
the fleet is reported silent once, and no further series or gateway is reported on its
own until fewer than half that share are silent. What was reported before stays so;
what is still silent when the fleet comes back is then reported on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.base import BoolArray, FloatArray, IntArray, SeriesState, as_batch, split_rounds


@dataclass(frozen=True)
class SilenceReport:
    silent: IntArray  # series silent on their own (not covered by a silent gateway)
    silent_groups: IntArray  # groups (gateways) whose every member is silent
    started: IntArray  # series that became silent (on their own) at this check
    recovered: IntArray  # series reported silent before that are no longer
    groups_started: IntArray
    groups_recovered: IntArray
    quiet: int = 0  # series silent now, covered or not
    fleet_silent: bool = False
    fleet_started: bool = False
    fleet_recovered: bool = False


class SilenceWatch:
    def __init__(
        self,
        *,
        timeout_s: float | None = None,
        interval_multiple: float = 5.0,
        minimum_s: float = 60.0,
        allowance_s: float = 30.0,
        min_members: int = 2,
        fleet_share: float = 0.5,
        fleet_min: int = 20,
    ) -> None:
        if (timeout_s is not None and timeout_s <= 0) or interval_multiple <= 0:
            raise ValueError("timeout_s and interval_multiple must be > 0")
        if minimum_s < 0 or allowance_s < 0 or min_members < 1:
            raise ValueError("minimum_s >= 0, allowance_s >= 0 and min_members >= 1 required")
        if not 0 < fleet_share <= 1 or fleet_min < 1:
            raise ValueError("0 < fleet_share <= 1 and fleet_min >= 1 required")
        self.timeout_s, self.interval_multiple = timeout_s, interval_multiple
        self.minimum_s, self.allowance_s, self.min_members = minimum_s, allowance_s, min_members
        self.fleet_share, self.fleet_min = fleet_share, fleet_min
        self._fleet_reported = False
        self._state = SeriesState(
            {"newest": math.nan, "interval": math.nan, "group": -1.0, "reported": 0.0}
        )
        self._reported_groups = np.zeros(0, dtype=bool)

    def state(self) -> dict[str, FloatArray]:
        out = self._state.snapshot()
        out["reported_groups"] = self._reported_groups.astype(np.float64)
        out["reported_fleet"] = np.array([float(self._fleet_reported)])
        return out

    def restore(self, state: dict[str, FloatArray]) -> None:
        state = dict(state)
        self._reported_groups = state.pop("reported_groups", np.zeros(0)).astype(bool)
        self._fleet_reported = bool(state.pop("reported_fleet", np.zeros(1)).any())
        self._state.restore(state, "SilenceWatch")

    def observe(self, series: Any, t: Any) -> None:
        """Readings seen (device times), in any order: late data is fine."""
        series, t, _ = as_batch(series, t, np.zeros(len(np.atleast_1d(series))))
        if len(series) == 0:
            return
        st = self._state
        st.grow(int(series.max()) + 1)
        for positions in split_rounds(series):
            s, now = series[positions], t[positions]
            newest, interval = st["newest"][s], st["interval"][s]
            step = now - newest
            ahead = np.isfinite(step) & (step > 0)
            learned = np.where(np.isnan(interval), step, interval + 0.1 * (step - interval))
            st["interval"][s] = np.where(ahead, learned, interval)
            st["newest"][s] = np.fmax(newest, now)

    def rewind(self, series: Any, t: Any) -> None:
        """A device clock stepped back to ``t``: its newest time moves back with it, so a
        reading from the future cannot keep a device that stopped counted alive."""
        self._state.rewind(["newest"], series, t)

    def set_groups(self, series: Any, groups: Any) -> None:
        """Which gateway each series reports through (-1: none)."""
        ids = np.asarray(series, dtype=np.int64)
        if len(ids):
            self._state.grow(int(ids.max()) + 1)
            self._state["group"][ids] = np.asarray(groups, dtype=np.float64)

    def timeouts(self) -> FloatArray:
        st = self._state
        count = st.count
        if self.timeout_s is not None:
            return np.full(count, self.timeout_s)
        learned = self.interval_multiple * st["interval"][:count]
        return np.fmax(np.where(np.isnan(learned), self.minimum_s, learned), self.minimum_s)

    def alive(self, series: int, now: float) -> bool:
        """Whether one series has reported within its timeout (plus allowance)."""
        st = self._state
        if series >= st.count or not np.isfinite(st["newest"][series]):
            return False
        timeout = float(self.timeouts()[series])
        return bool(now - st["newest"][series] <= timeout + self.allowance_s)

    def _known_and_quiet(self, now: float) -> tuple[BoolArray, BoolArray]:
        """Series that have reported at all, and those of them now past their timeout."""
        newest = self._state["newest"][: self._state.count]
        known = np.isfinite(newest)
        return known, known & (now - newest > self.timeouts() + self.allowance_s)

    def group_alive(self, group: int, now: float) -> bool:
        """Whether any series of a group (gateway) has reported within its timeout."""
        known, quiet = self._known_and_quiet(now)
        members = self._state["group"][: self._state.count] == group
        return bool(np.any(members & known & ~quiet))

    @property
    def fleet_silent(self) -> bool:
        """Whether the last check found the fleet silent (``check``)."""
        return self._fleet_reported

    def check(self, now: float) -> SilenceReport:
        st = self._state
        count = st.count
        group = st["group"][:count].astype(np.int64)
        known, quiet = self._known_and_quiet(now)

        known_count, quiet_count = int(known.sum()), int(quiet.sum())
        share = quiet_count / known_count if known_count else 0.0
        was_fleet = self._fleet_reported
        fleet = known_count >= self.fleet_min and (
            share >= self.fleet_share or (was_fleet and share >= self.fleet_share / 2)
        )

        grouped = known & (group >= 0)
        size = int(group.max()) + 1 if count and group.max() >= 0 else 0
        previous_groups = np.zeros(size, dtype=bool)
        previous_groups[: min(size, len(self._reported_groups))] = self._reported_groups[:size]
        members = np.bincount(group[grouped], minlength=size)
        quiet_members = np.bincount(group[grouped & quiet], minlength=size)
        group_silent = (members >= self.min_members) & (quiet_members == members)
        before = st["reported"][:count] > 0
        if fleet:  # nothing new on its own: the fleet alert stands for it
            group_silent &= previous_groups
        covered = (
            grouped & group_silent[np.where(grouped, group, 0)]
            if size
            else np.zeros(count, dtype=bool)
        )
        alone = quiet & ~covered
        if fleet:
            alone &= before
        st["reported"][:count] = alone
        self._reported_groups = group_silent
        self._fleet_reported = fleet
        ids = np.arange(count)
        gids = np.arange(size)
        return SilenceReport(
            silent=ids[alone],
            silent_groups=gids[group_silent],
            started=ids[alone & ~before],
            recovered=ids[before & ~alone],
            groups_started=gids[group_silent & ~previous_groups],
            groups_recovered=gids[previous_groups & ~group_silent],
            quiet=quiet_count,
            fleet_silent=fleet,
            fleet_started=fleet and not was_fleet,
            fleet_recovered=was_fleet and not fleet,
        )

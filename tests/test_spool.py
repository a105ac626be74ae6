"""The disk spool on its own: order, durability across reopening, bounds, torn writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.spool import DiskSpool, SpoolFull


def batch(k: int, n: int = 3) -> list[str]:
    return [f"camera,device=cam-{k} people={i}i {1_700_000_000_000 + i}" for i in range(n)]


def drain(spool: DiskSpool) -> list[list[str]]:
    out = []
    while (lines := spool.peek()) is not None:
        out.append(lines)
        spool.pop()
    return out


def test_batches_come_back_in_order_across_segments_and_reopening(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=1_000_000, segment_bytes=300)
    for k in range(10):
        spool.append(batch(k))
    assert len(list(tmp_path.glob("*.seg"))) > 1  # rolled over
    assert spool.peek() == batch(0)
    spool.pop()
    spool.pop()
    reopened = DiskSpool(tmp_path, max_bytes=1_000_000, segment_bytes=300)  # a restart
    assert drain(reopened) == [batch(k) for k in range(2, 10)]
    assert not reopened and reopened.pending_bytes == 0
    assert len(list(tmp_path.glob("*.seg"))) <= 1  # replayed segments are deleted
    reopened.append(batch(42))  # and it keeps working after being emptied
    assert drain(DiskSpool(tmp_path, max_bytes=1_000_000, segment_bytes=300)) == [batch(42)]


def test_full_spool_refuses_instead_of_dropping(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=400)
    spool.append(batch(1))
    spool.append(batch(2))
    with pytest.raises(SpoolFull):
        spool.append(batch(3, n=10))
    assert spool.fill_ratio > 0.5
    assert drain(spool) == [batch(1), batch(2)]
    spool.append(batch(3, n=5))  # room again once replayed
    assert drain(spool) == [batch(3, n=5)]


def test_a_torn_last_write_is_cut_off_at_reopening(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=1_000_000)
    spool.append(batch(1))
    (segment,) = tmp_path.glob("*.seg")
    with segment.open("ab") as handle:
        handle.write(b"5000\ncamera,device=x peo")  # the crash came mid-write
    reopened = DiskSpool(tmp_path, max_bytes=1_000_000)
    reopened.append(batch(2))
    assert drain(reopened) == [batch(1), batch(2)]

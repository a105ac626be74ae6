"""The disk spool on its own: order, durability across reopening, bounds, torn writes,
damaged records, a full disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.errors import SpoolFull, SpoolWriteFailed
from collector.spool import HEADER, DiskSpool, encode_record
from tests.conftest import fill_disk


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
    size = segment.stat().st_size
    with segment.open("ab") as handle:
        handle.write(encode_record("\n".join(batch(7, n=50)).encode())[:300])  # crash mid-write
    reopened = DiskSpool(tmp_path, max_bytes=1_000_000)
    assert segment.stat().st_size == size  # cut off: its append never returned
    reopened.append(batch(2))
    assert drain(reopened) == [batch(1), batch(2)]
    assert reopened.corrupt_records == 0  # never acknowledged, so nothing was lost


def test_a_corrupt_byte_is_skipped_counted_and_the_records_after_it_kept(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=1_000_000)
    for k in range(5):
        spool.append(batch(k))
    (segment,) = tmp_path.glob("*.seg")
    data = bytearray(segment.read_bytes())
    record = len(data) // 5
    data[2 * record + HEADER.size + 7] = 0xFF  # not even UTF-8 any more
    segment.write_bytes(bytes(data))
    reopened = DiskSpool(tmp_path, max_bytes=1_000_000)  # no crash at start
    assert drain(reopened) == [batch(0), batch(1), batch(3), batch(4)]
    assert (reopened.corrupt_records, reopened.corrupt_bytes) == (1, record)
    assert drain(DiskSpool(tmp_path, max_bytes=1_000_000)) == []  # skipped for good


@pytest.mark.parametrize("where", ["magic", "length", "checksum", "header end"])
def test_a_damaged_header_never_makes_the_reader_cross_a_boundary(
    tmp_path: Path, where: str
) -> None:
    spool = DiskSpool(tmp_path, max_bytes=1_000_000, segment_bytes=10_000)
    for k in range(4):
        spool.append(batch(k, n=20))
    (segment,) = tmp_path.glob("*.seg")
    data = bytearray(segment.read_bytes())
    record = len(data) // 4
    at = record + {"magic": 1, "length": 5, "checksum": 9, "header end": 15}[where]
    data[at] ^= 0x10
    segment.write_bytes(bytes(data))
    reopened = DiskSpool(tmp_path, max_bytes=1_000_000, segment_bytes=10_000)
    assert drain(reopened) == [batch(0, n=20), batch(2, n=20), batch(3, n=20)]
    assert reopened.corrupt_records == 1
    reopened.append(batch(9))  # and appends and replay go on
    assert drain(reopened) == [batch(9)]


def test_a_segment_of_another_format_is_counted_never_a_crash(tmp_path: Path) -> None:
    (tmp_path / "000000000000.seg").write_bytes(b"57\ncamera,device=cam-1 people=1i 1\n")
    (tmp_path / "cursor").write_text("0 3\n")
    spool = DiskSpool(tmp_path, max_bytes=1_000_000)
    spool.append(batch(1))
    assert drain(spool) == [batch(1)]
    assert spool.corrupt_records == 1 and not spool


def test_a_full_disk_cuts_the_record_back_and_refuses_until_there_is_room(
    small_filesystem,
) -> None:
    disk = small_filesystem(512 * 1024)
    spool = DiskSpool(disk / "spool", max_bytes=10_000_000)
    spool.append(batch(0))
    ballast = fill_disk(disk, leave=6_000)
    stored, refused = [batch(0)], []
    for k in range(1, 20):  # ~9 kB each: the first that does not fit is cut mid-record
        try:
            spool.append(batch(k, n=120))
            stored.append(batch(k, n=120))
        except SpoolWriteFailed as exc:
            refused.append(exc.disk_full)
    assert refused and all(refused)
    assert spool.pending_bytes == sum(p.stat().st_size for p in (disk / "spool").glob("*.seg"))
    assert spool.check_disk_full()
    ballast.unlink()  # the operator makes room
    assert not spool.check_disk_full()
    spool.append(batch(99))
    stored.append(batch(99))
    reopened = DiskSpool(disk / "spool", max_bytes=10_000_000)  # a crash and a restart
    assert drain(reopened) == stored
    assert reopened.corrupt_records == 0

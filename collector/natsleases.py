"""Which collector reads which partition: leases in a NATS key-value bucket with a TTL.

Every collector of a cluster (``transport = "nats"``) keeps two kinds of keys alive in the
bucket ``smartunit_partitions``, whose entries expire ``nats.lease_ttl_s`` after their
last write:

- ``member.<id>``: "I am here", written every round (a third of the TTL);
- ``owner.<n>``: the lease on partition n, created only if absent (an atomic create) and
  renewed by its holder with a compare-and-set on the revision it wrote last.

Each round every member computes the same share from the members alive (rendezvous
hashing with bounded loads: every member gets the same number of partitions, give or take
one, and a member that joins or leaves moves mostly its own share). A member claims what
is its share and free, gives up what is no longer its share once it holds no
unacknowledged message of it (so the next owner starts where it stopped, in order), and
stops reading at once a lease it failed to renew. A collector that dies leaves its leases
to expire: the others claim them within the TTL and a round, and JetStream delivers the
dead one's unacknowledged messages again after ``nats.ack_wait_s``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

BUCKET = "smartunit_partitions"
_KEY_UNSAFE = re.compile(r"[^-_=a-zA-Z0-9]")
_GONE = (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError)


@dataclass
class OwnershipChange:
    gained: set[int] = field(default_factory=set)  # start reading these
    lost: set[int] = field(default_factory=set)  # stop reading these now: someone else's
    surplus: set[int] = field(default_factory=set)  # stop reading: another member's share


def share(members: list[str], partitions: int) -> dict[int, str]:
    """Each partition's member, every member given ``partitions // len(members)`` or one
    more: rendezvous hashing with bounded loads. Every (member, partition) pair has a
    weight; pairs are taken heaviest first and a partition goes to the first member still
    under its bound. Plain rendezvous hashing (highest weight wins) moves only a leaving
    member's own partitions, but leaves shares to chance: three members of eight partitions
    get 7, 1 and 0 often enough to matter, one collector carrying the cluster. With the
    bound a member's arrival or departure still moves mostly its own share.

    The weight must mix well (FNV-1a of such short keys gave one member every partition)
    and be the same in every process (Python's own hash is salted per process)."""

    def weight(member: str, partition: int) -> bytes:
        return hashlib.blake2b(f"{member}/{partition}".encode(), digest_size=8).digest()

    if not members:
        return {}
    floor, larger_left = divmod(partitions, len(members))
    pairs = sorted(
        (
            (weight(member, partition), member, partition)
            for member in members
            for partition in range(partitions)
        ),
        reverse=True,
    )
    owner: dict[int, str] = {}
    held = dict.fromkeys(members, 0)
    for _, member, partition in pairs:
        if partition in owner:
            continue
        count = held[member]
        if count < floor or (count == floor and larger_left > 0):
            if count == floor:
                larger_left -= 1
            owner[partition] = member
            held[member] = count + 1
    return dict(sorted(owner.items()))


class PartitionLeases:
    """One collector's side of the leases: call ``round`` every ``period_s``."""

    def __init__(
        self, js: JetStreamContext, *, instance: str, partitions: int, ttl_s: float, replicas: int
    ) -> None:
        self.js = js
        self.instance = instance
        self.partitions = partitions
        self.ttl_s = ttl_s
        self.replicas = replicas
        self.owned: dict[int, int] = {}  # partition -> revision of our last write
        self.members: list[str] = []
        self._kv: KeyValue | None = None

    @property
    def period_s(self) -> float:
        return self.ttl_s / 3

    @property
    def _member_key(self) -> str:
        return "member." + _KEY_UNSAFE.sub("_", self.instance)

    async def open(self) -> None:
        try:
            self._kv = await self.js.key_value(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            self._kv = await self.js.create_key_value(
                KeyValueConfig(
                    bucket=BUCKET,
                    history=1,
                    ttl=self.ttl_s,
                    replicas=self.replicas,
                    storage=StorageType.FILE,
                )
            )

    async def round(
        self,
        idle: Callable[[int], bool],
        release: Callable[[int], Awaitable[object]] | None = None,
    ) -> OwnershipChange:
        """Say we are here, renew, claim our free share, give up what we must
        (``release``, awaited first, hands the partition's state over)."""
        kv = self._kv
        assert kv is not None, "open() first"
        await kv.put(self._member_key, self.instance.encode())
        self.members = await self._members(kv)
        mine = {
            p
            for p, member in share(self.members, self.partitions).items()
            if member == self.instance
        }
        change = OwnershipChange()
        for partition, revision in list(self.owned.items()):
            key = f"owner.{partition}"
            if partition not in mine and idle(partition):
                if release is not None:
                    await release(partition)
                self.owned.pop(partition)
                # expired and claimed meanwhile: not ours to delete
                with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                    await kv.delete(key, last=revision)
                change.surplus.add(partition)
                continue
            try:
                renewed = await kv.update(key, self.instance.encode(), last=revision)
            except (nats.js.errors.KeyWrongLastSequenceError, *_GONE):
                self.owned.pop(partition)
                change.lost.add(partition)
                continue
            self.owned[partition] = renewed or revision
            if partition not in mine:
                change.surplus.add(partition)
        for partition in sorted(mine - set(self.owned)):
            claimed = await self._claim(kv, partition)
            if claimed is not None:
                self.owned[partition] = claimed
                change.gained.add(partition)
        if change.gained or change.lost:
            log.info(
                "partition ownership changed",
                extra={
                    "gained": sorted(change.gained),
                    "lost": sorted(change.lost),
                    "owned": len(self.owned),
                    "members": len(self.members),
                },
            )
        return change

    async def _members(self, kv: KeyValue) -> list[str]:
        try:
            keys = await kv.keys()  # filtered here: nats-server 2.9 ignores a filter
        except nats.js.errors.NoKeysError:
            keys = []
        members = {self.instance}
        for key in keys:
            if not key.startswith("member."):
                continue
            try:
                entry = await kv.get(key)
            except _GONE:
                continue
            if entry.value:
                members.add(entry.value.decode())
        return sorted(members)

    async def _claim(self, kv: KeyValue, partition: int) -> int | None:
        key = f"owner.{partition}"
        try:
            return await kv.create(key, self.instance.encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        try:  # a lease this instance held before a restart is still its own
            entry = await kv.get(key)
        except _GONE:
            return None
        if entry.value == self.instance.encode() and entry.revision is not None:
            try:
                return await kv.update(key, entry.value, last=entry.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                return None
        return None

    async def leave(self) -> None:
        """Give back every lease and the membership at once (a clean stop)."""
        kv = self._kv
        if kv is None:
            return
        for partition, revision in list(self.owned.items()):
            with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                await kv.delete(f"owner.{partition}", last=revision)
        self.owned.clear()
        await kv.delete(self._member_key)

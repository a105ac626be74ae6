"""Device topics on a NATS cluster: subjects, partitions, and the stream that holds them.

Devices speak protocol v1 over MQTT 3.1.1 to the MQTT gateway of nats-server. The gateway
turns a topic into a subject (``/`` becomes ``.``; from nats-server 2.10 on a ``.`` inside
a level becomes ``//``, while 2.9 refuses such a topic and closes the connection). The
server's subject mapping (``server_mappings``) then moves each data subject into one of
``partitions`` partitions by a hash of its device token, so one device always lands in the
same partition, in order.

Why the gateway's own stream (``$MQTT_msgs``) and not a stream of ours: the gateway sends
the PUBACK of a QoS 1 publish only once it has stored the message there, while a stream of
ours capturing the same subjects is fed by plain delivery, without the PUBACK waiting for
it (docs/cluster.md, "Transport (NATS)"). The stream keeps a message while a consumer
whose filter matches has not acknowledged it (interest retention), so the partitions'
durable consumers must exist before devices publish: a message no consumer matches is
dropped at once.
"""

from __future__ import annotations

MQTT_MESSAGES_STREAM = "$MQTT_msgs"
MQTT_MESSAGES_PREFIX = "$MQTT.msgs."
PARTITION_ROOT = "smartunit.v1.partition"
DATA_SOURCE_SUBJECT = "smartunit.v1.*.*.data"
PROBE_FAMILY = "_probe"  # core NATS only, never stored: checks the server's mapping
_FNV_OFFSET, _FNV_PRIME = 0x811C9DC5, 0x01000193


def server_mappings(partitions: int) -> dict[str, str]:
    """The nats-server ``mappings`` block: data subjects into partitions by device token."""
    destination = (
        f"{PARTITION_ROOT}.{{{{partition({partitions},2)}}}}"
        ".{{wildcard(1)}}.{{wildcard(2)}}.data"
    )
    return {DATA_SOURCE_SUBJECT: destination}


def partition_filter(partition: int) -> str:
    """The subject filter of one partition's durable consumer on the gateway's stream."""
    return f"{MQTT_MESSAGES_PREFIX}{PARTITION_ROOT}.{partition}.>"


def device_token(device: str) -> str:
    """The device's subject token, which the servers hash into a partition: the gateway
    writes a ``.`` inside a topic level as ``//`` (docs/cluster.md)."""
    return device.replace(".", "//")


def partition_of(device_token: str, partitions: int) -> int:
    """The partition nats-server's ``partition()`` picks: FNV-1a 32 of the token, modulo."""
    digest = _FNV_OFFSET
    for byte in device_token.encode():
        digest = ((digest ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return digest % partitions


def subject_to_topic(subject: str) -> str:
    """The MQTT topic of a subject, undoing the gateway's conversion (``.`` separates
    levels, ``//`` is a ``.`` inside a level, ``/.`` and ``./`` mark empty levels)."""
    out: list[str] = []
    i, end = 0, len(subject)
    while i < end:
        char = subject[i]
        if char == "/" and i + 1 < end and subject[i + 1] in "./":
            out.append("/" if subject[i + 1] == "." else ".")
            i += 2
            continue
        out.append("/" if char == "." else char)
        i += 1
    return "".join(out)


def partitioned_topic(subject: str) -> tuple[int, str] | None:
    """``$MQTT.msgs.smartunit.v1.partition.<n>.<family>.<device>.data`` as its partition
    and the device's own topic; None for a subject of another shape."""
    prefix = f"{MQTT_MESSAGES_PREFIX}{PARTITION_ROOT}."
    if not subject.startswith(prefix):
        return None
    number, _, rest = subject[len(prefix) :].partition(".")
    if not number.isdigit() or not rest:
        return None
    return int(number), "smartunit/v1/" + subject_to_topic(rest)

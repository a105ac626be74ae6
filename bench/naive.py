"""The naive baseline: aiomqtt + json + one HTTP write per batch.

What a first implementation looks like: subscribe at QoS 1 with aiomqtt, ``json.loads``
each payload, format a line-protocol line, and POST a batch to InfluxDB's ``/write``
every 5,000 lines or 100 ms. No validation, no registry, no detection, messages
acknowledged on receipt (aiomqtt's default), so it is a generous baseline: it does less
work than the collector and would lose what is in its buffer on a crash.
Benchmark-only code.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiomqtt
import httpx

FILTER = "smartunit/v1/+/+/data"


async def register(port: int, client_id: str) -> None:
    """A persistent session subscribed to device data, so the broker queues for it."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=client_id, clean_session=False) as c:
        await c.subscribe(FILTER, qos=1)


def _line(topic: str, payload: bytes) -> str:
    _, _, family, device, _ = topic.split("/")
    body = json.loads(payload)
    values = body.get("readings", body)
    fields = ",".join(
        f"{k}={v}" for k, v in values.items() if k not in ("ts", "seq") and v is not None
    )
    return f"{family},device={device} {fields},seq={body['seq']}i {int(body['ts'] * 1000)}"


async def drain(port: int, client_id: str, influx_url: str, database: str, count: int) -> float:
    """Take ``count`` queued messages into InfluxDB; returns messages per second."""
    async with httpx.AsyncClient(base_url=influx_url, timeout=30) as http:
        await http.post("/query", data={"q": f'CREATE DATABASE "{database}"'})
        lines: list[str] = []
        flushed = time.monotonic()
        taken = 0

        async def flush() -> None:
            nonlocal lines, flushed
            if lines:
                body = "\n".join(lines).encode()
                response = await http.post(
                    "/write", params={"db": database, "precision": "ms"}, content=body
                )
                response.raise_for_status()
            lines, flushed = [], time.monotonic()

        async with aiomqtt.Client(
            "127.0.0.1", port, identifier=client_id, clean_session=False
        ) as client:
            started = time.perf_counter()
            async for message in client.messages:
                lines.append(_line(str(message.topic), bytes(message.payload)))  # type: ignore[arg-type]
                taken += 1
                if len(lines) >= 5000 or time.monotonic() - flushed > 0.1:
                    await flush()
                if taken >= count:
                    break
            await flush()
            return count / (time.perf_counter() - started)


def run(port: int, client_id: str, influx_url: str, database: str, count: int) -> float:
    return asyncio.run(drain(port, client_id, influx_url, database, count))


def run_register(port: int, client_id: str) -> None:
    asyncio.run(register(port, client_id))

"""/metrics as Prometheus reads it: Prometheus' own linter (``promtool check metrics``) on
a running collector's metrics, and the declarations that keep it passing.

Real Mosquitto, InfluxDB, collector and webhook receiver; promtool comes from Debian's
``prometheus`` package (scripts/install-deps.sh).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.metrics import BASE_UNITS, FAMILIES, PREFIX
from collector.protocol import REJECTION_REASONS
from tests.test_alert_loop_faults import chem_park, reading, wait_for  # noqa: F401 - fixture

# Units Prometheus' conventions replace with a base unit (seconds, bytes).
ABBREVIATED_UNITS = re.compile(
    r"_(ms|us|ns|milliseconds|microseconds|nanoseconds|minutes|hours|days|kb|mb|gb|"
    r"kib|mib|gib|kilobytes|megabytes|bits|percent|pct)(_total)?$"
)


def promtool(exposition: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: scripts/install-deps.sh installs Debian's prometheus"
    return subprocess.run(
        [tool, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60
    )


def test_every_family_is_documented_in_base_units() -> None:
    for name, family in FAMILIES.items():
        assert family.help.strip(), f"{name}: no help text"
        assert not ABBREVIATED_UNITS.search(name), f"{name}: use a base unit (seconds, bytes)"
        assert (family.type == "counter") == name.endswith("_total"), name
        if family.unit:
            assert family.unit in BASE_UNITS, name
            assert name.removesuffix("_total").endswith("_" + family.unit), name
        has_values = bool(family.known or family.values_from)
        assert bool(family.label) == has_values, f"{name}: label without known values"


def test_every_family_is_in_the_api_manual() -> None:
    manual = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
    missing = [name for name in FAMILIES if f"`{PREFIX}{name}" not in manual]
    assert not missing, f"add these to the metrics table of docs/api.md: {missing}"


@pytest.mark.slow
def test_a_running_collectors_metrics_pass_promtool(
    chem_park,  # noqa: F811 - fixture
    run_collector,
    publisher,
) -> None:
    settings = chem_park({})
    collector = run_collector(settings).collector
    reading(publisher, "gas-1", "lel_pct", 55.0)  # red: a detection, an alert, a webhook
    publisher.publish("smartunit/v1/chem/gas-1/data", "not json")  # a rejection

    def scrape() -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{settings.http.port}/metrics")

    def sample(response: httpx.Response, family: str, **labels: str) -> float:
        for parsed in text_string_to_metric_families(response.text):
            if parsed.name == PREFIX + family:
                for each in parsed.samples:
                    if each.labels == labels:
                        return each.value
        return 0.0

    response = wait_for(
        lambda: (
            (r := scrape())
            and sample(r, "rejections", reason="bad_json")
            and sample(r, "alert_events", type="opened")
            and sample(r, "outbox_entries", status="delivered")
            and sample(r, "readings_stored")  # written to InfluxDB: a write latency measured
            and r
        )
    )
    assert response, "no rejection, alert, delivered webhook and stored reading in /metrics"
    undeclared = set(collector.metrics()) - set(FAMILIES)
    assert not undeclared, f"declare these in collector/metrics.py: {undeclared}"
    linted = promtool(response.text)
    assert (linted.returncode, linted.stdout + linted.stderr) == (0, ""), response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"

    # every reason the protocol knows has a series from the start, not from its first use
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    rejections = {s.labels["reason"]: s.value for s in families[PREFIX + "rejections"].samples}
    assert set(rejections) == set(REJECTION_REASONS)
    assert rejections["bad_json"] == 1 and rejections["ts_too_old"] == 0
    latency = families[PREFIX + "write_latency_seconds"].samples[0].value
    assert 0 < latency < 30, response.text  # seconds, not milliseconds


def test_promtool_finds_what_the_tests_rely_on_it_to_find() -> None:
    """The linter this file trusts refuses a family without help and an abbreviated unit."""
    linted = promtool("# TYPE smartunit_write_latency_ms gauge\nsmartunit_write_latency_ms 4\n")
    assert linted.returncode != 0
    assert "no help text" in linted.stdout + linted.stderr
    assert "abbreviated units" in linted.stdout + linted.stderr

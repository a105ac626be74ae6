#!/usr/bin/env bash
# Install what SmartUnit needs on Debian/Ubuntu: Mosquitto, InfluxDB 1.x, nats-server, a CJK
# font (the console), Chromium and PostgreSQL (tests) and a Python venv.
# Idempotent: installs only what is missing. Used by `make demo`, `make test` and CI.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v influxd >/dev/null 2>&1 || need+=(influxdb)
command -v influx >/dev/null 2>&1 || need+=(influxdb-client)
# transport "nats": a local NATS cluster with its MQTT gateway (tests, cluster demo)
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
# the interpreter the Makefile builds the venv with
"${PYTHON:-python3}" -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)  # validates docker-compose.yml in the tests
[ -x /usr/bin/chromium ] || need+=(chromium)  # the console's browser test (Playwright drives it)
# Chinese on the console (unit and place names, the zh-CN interface): without a CJK font
# Debian's browsers draw empty boxes
fc-list 2>/dev/null | grep -q "Noto Sans CJK" || need+=(fonts-noto-cjk)
# promtool, Prometheus' own linter, checks /metrics in the tests. Debian ships it only in
# the server's package (19 MB download, 96 MB installed); its server is switched off below.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# the shared alert store of a cluster (tests, make cluster-demo) and Alerta's database (tests/test_alerta.py)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need+=(postgresql)

if [ ${#need[@]} -gt 0 ]; then
    echo "installing Debian packages: ${need[*]}"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to install: ${need[*]}" >&2; exit 1; }
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
    if [[ " ${need[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
        $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true  # only promtool is wanted
    fi
fi
# The Debian packages enable system services; where systemd runs them, they would hold
# the default ports. SmartUnit starts its own servers on free ports, so that is harmless.

#!/bin/sh
# Sets the service's own broker passwords from the environment, at every start of the
# compose stack (service "mosquitto-passwd", before the broker), into the password file
# the broker reads; entries for devices and panels added by hand stay as they are.
#   SMARTUNIT_MQTT_PASSWORD        smartunit-collector (required)
#   SMARTUNIT_SIMULATOR_PASSWORD   smartunit-simulator (the "demo" profile; leave empty in
#                                  production, and the simulator cannot sign in)
#   SMARTUNIT_OBSERVER_PASSWORD    smartunit-observer, read-only (optional)
# Passwords go through a file hashed in place (mosquitto_passwd -U), never a command line.
set -eu
umask 077
file=${MOSQUITTO_PASSWORD_FILE:-/mosquitto/auth/passwd}
: "${SMARTUNIT_MQTT_PASSWORD:?set SMARTUNIT_MQTT_PASSWORD}"
mkdir -p "$(dirname "$file")"
touch "$file"
new=$(mktemp)
kept=$(mktemp)
trap 'rm -f "$new" "$kept"' EXIT
printf 'smartunit-collector:%s\n' "$SMARTUNIT_MQTT_PASSWORD" >"$new"
if [ -n "${SMARTUNIT_SIMULATOR_PASSWORD:-}" ]; then
    printf 'smartunit-simulator:%s\n' "$SMARTUNIT_SIMULATOR_PASSWORD" >>"$new"
fi
if [ -n "${SMARTUNIT_OBSERVER_PASSWORD:-}" ]; then
    printf 'smartunit-observer:%s\n' "$SMARTUNIT_OBSERVER_PASSWORD" >>"$new"
fi
mosquitto_passwd -U "$new"
# every other user's line as it was; the service's own users as just hashed
awk -F: 'NR == FNR { ours[$1]; next } !($1 in ours)' "$new" "$file" >"$kept"
cat "$kept" "$new" >"$file"
# the broker reads it after dropping root (user mosquitto in the eclipse-mosquitto image)
if id mosquitto >/dev/null 2>&1; then
    chown mosquitto "$file"
fi

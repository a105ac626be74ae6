// A new red alarm is heard and seen: a two-tone chime (WebAudio, no sound file to ship)
// and a flashing screen edge, until someone acknowledges it. Mute silences the chime only:
// a wall screen must still flash.
"use strict";

const alarm = {
  muted: localStorage.getItem("smartunit.muted") === "1",
  seenReds: null, // ids of red alerts already announced; null until the first load
  context: null,
};

// Browsers let a page play sound only after a user gesture: the sign-in click is one.
function unlockAudio() {
  if (!alarm.context && window.AudioContext) alarm.context = new AudioContext();
  if (alarm.context?.state === "suspended") alarm.context.resume();
}

function chime() {
  unlockAudio();
  const ctx = alarm.context;
  if (!ctx) return;
  const start = ctx.currentTime;
  for (const [i, freq] of [880, 660, 880, 660].entries()) {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = "square";
    osc.frequency.value = freq;
    gain.gain.value = 0.15;
    osc.connect(gain).connect(ctx.destination);
    osc.start(start + i * 0.3);
    osc.stop(start + i * 0.3 + 0.25);
  }
}

function renderMute() {
  const button = document.getElementById("mute");
  button.textContent = alarm.muted ? t("unmute") : t("mute");
  button.classList.toggle("muted", alarm.muted);
}

function toggleMute() {
  alarm.muted = !alarm.muted;
  localStorage.setItem("smartunit.muted", alarm.muted ? "1" : "0");
  unlockAudio();
  renderMute();
}

// Called with every fresh alert list. The first list is the baseline: opening the console
// on a city that already has reds must not sound for each of them.
function announceNewReds(alerts) {
  const reds = alerts.filter((a) => a.colour === "red" && a.state !== "closed");
  const fresh = alarm.seenReds === null ? [] : reds.filter((a) => !alarm.seenReds.has(a.id));
  alarm.seenReds = new Set(reds.map((a) => a.id));
  if (!fresh.length) return [];
  if (!alarm.muted) chime();
  document.body.dataset.alarms = String(Number(document.body.dataset.alarms || 0) + fresh.length);
  return fresh.map((a) => a.id);
}

// The screen edge flashes while any red announced here waits for acknowledgement.
function flashWhileUnacknowledged(alerts, flashing) {
  const waiting = alerts.some((a) => flashing.has(a.id) && a.colour === "red" && !a.acknowledged
    && a.state !== "closed");
  document.body.classList.toggle("alarm", waiting);
}

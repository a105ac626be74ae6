// Silences (maintenance windows): alerts of a unit or device notify nobody until the end.
"use strict";

function renderSilenceUnits(units) {
  const select = document.getElementById("silence-unit");
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, "—"),
    ...units.filter((u) => !u.id.startsWith("_"))
      .map((u) => el("option", { value: u.id }, u.name === u.id ? u.id : `${u.name} (${u.id})`)));
  select.value = chosen;
}

function renderSilences(silences) {
  const list = document.getElementById("silences");
  if (!silences.length) return list.replaceChildren(el("li", { class: "dim" }, t("silence_none")));
  list.replaceChildren(...silences.map((s) => {
    const target = s.unit ? unitName(s.unit) : s.device;
    return el("li", { "data-silence": s.id },
      el("strong", {}, target), " ", t("silence_until", time(s.ends_ms)), " — ",
      t("silence_by", s.actor, s.reason));
  }));
}

async function loadSilences() {
  renderSilences(await api("/api/silences"));
}

async function createSilence(event) {
  event.preventDefault();
  const unit = $("silence-unit").value;
  const device = $("silence-device").value.trim();
  const result = $("silence-result");
  result.className = "error";
  result.textContent = "";
  try {
    const silence = await api("/api/silences", {
      method: "POST",
      body: JSON.stringify({
        ...(unit ? { unit } : {}),
        ...(device ? { device } : {}),
        minutes: Number($("silence-minutes").value),
        actor: state.actor,
        reason: $("silence-reason").value.trim(),
      }),
    });
    result.className = "ok";
    result.textContent = t("silence_created", silence.id);
    $("silence-reason").value = "";
    $("silence-device").value = "";
  } catch (error) {
    if (error instanceof Unauthorised) return signIn();
    result.textContent = error.message;
  }
  await loadSilences().catch(() => {});
}

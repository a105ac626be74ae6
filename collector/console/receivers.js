// Webhook receivers that refuse events: shown on every page of the console.
"use strict";

// A receiver that does not take events means people who are not told: shown on every page.
function renderReceivers(receivers) {
  const failing = receivers.filter((r) => r.failing || r.alert);
  $("receivers").hidden = !failing.length;
  $("receivers").replaceChildren(...failing.map((r) => {
    const since = r.failing_since_ms ? t("failing_for", age(r.failing_since_ms)) : t("delivering_again");
    const waiting = r.pending
      ? t("waiting", r.pending, duration(r.oldest_pending_age_s * 1000)) : t("nothing_waiting");
    return el("div", { class: "receiver-failing", "data-receiver": r.name },
      colourDot(r.alert || "orange"), t("receiver_failing", r.name, since),
      el("span", { class: "detail" },
        t("receiver_detail", r.consecutive_failures, r.last_error || "—", waiting, r.dead)));
  }));
}

async function loadReceivers() {
  renderReceivers(await api("/api/receivers"));
}

// The cluster (transport "nats"): which collector instances are alive, which partitions
// each reads, and how far each partition is behind. Its tab shows only on a cluster.
"use strict";

const leaseAge = (seconds) => (seconds === null || seconds === undefined ? "—" : t("s", seconds.toFixed(1)));

function renderCluster(cluster) {
  const clustered = cluster.transport === "nats";
  $("tab-cluster").hidden = !clustered;
  if (!clustered) {
    if (currentView() === "cluster") showView("list");
    return;
  }
  const read = cluster.read_at_ms ? t("cluster_read", age(cluster.read_at_ms)) : t("cluster_not_read");
  $("cluster-status").textContent = cluster.error ? `${read}; ${t("cluster_error", cluster.error)}` : read;
  $("cluster-status").classList.toggle("error", Boolean(cluster.error));
  $("cluster-instances").replaceChildren(...cluster.instances.map((each) =>
    el("tr", { "data-instance": each.id },
      el("td", {}, each.this ? t("cluster_this", each.id) : each.id),
      el("td", {}, String(each.partitions.length)),
      el("td", {}, each.partitions.join(", ") || "—"),
      el("td", {}, leaseAge(each.lease_age_s)))));
  $("cluster-partitions").replaceChildren(...cluster.partitions.map((row) =>
    el("tr", { "data-partition": String(row.partition), class: row.owner ? "" : "unowned" },
      el("td", {}, String(row.partition)),
      el("td", {}, row.owner ?? t("cluster_unowned", leaseAge(row.unowned_for_s))),
      el("td", {}, leaseAge(row.lease_age_s)),
      el("td", {}, row.lag === null ? "—" : t("cluster_lag", row.lag, row.pending, row.ack_pending)))));
  const stream = cluster.stream;
  $("cluster-stream").textContent = stream
    ? t("cluster_stream", stream.name, stream.messages, stream.replicas, stream.leader ?? "—") : "";
}

async function loadCluster() {
  renderCluster(await api("/api/cluster"));
}

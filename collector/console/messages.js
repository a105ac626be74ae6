// Every text the console shows, in each of its languages: one table, so a translation is
// one edit here. zh-CN is the default (the duty officers read Chinese); English on request.
"use strict";

const LANGUAGES = { "zh-CN": "中文", en: "English" };

const MESSAGES = {
  "zh-CN": {
    title: "SmartUnit 监测平台",
    sign_in: "登录", sign_out: "退出", your_name: "您的姓名（每次操作都会记录）",
    api_token: "API 令牌", unknown_token: "令牌无效。",
    units: "单位", whole_city: "全市", showing: "当前范围",
    unregistered: "未登记设备（各为独立事件）", unregistered_unit: "未登记设备", service_itself: "系统自身",
    unit_collector: "采集服务", unit_network: "网关与网络",
    view_list: "告警", view_map: "地图", view_silences: "静默 / 维护", view_cluster: "集群",
    cluster_instances: "采集实例", cluster_partitions: "分区",
    cluster_col_instance: "实例", cluster_col_count: "分区数", cluster_col_partitions: "持有的分区",
    cluster_col_lease: "租约已续", cluster_col_partition: "分区", cluster_col_owner: "持有者",
    cluster_col_lag: "积压（未确认消息）", cluster_this: "{0}（本实例）",
    cluster_unowned: "无人持有（已 {0}）", cluster_lag: "{0}（待取 {1}，已取未确认 {2}）",
    cluster_read: "{0}前读取", cluster_not_read: "尚未读取", cluster_error: "读取失败：{0}",
    cluster_stream: "消息流 {0}：{1} 条消息，{2} 副本，主节点 {3}",
    family: "类别", all: "全部", states: "状态", active: "未关闭", all_closed: "全部（含已关闭）",
    fam_chem: "化工园区", fam_camera: "人流与交通", fam_parking: "停车场", fam_fire: "消防", fam_gateway: "网关",
    fam_system: "系统",
    search: "搜索单位、设备、编号…",
    col_unit: "单位 / 设备", col_what: "告警内容", col_value: "峰值 · 当前（限值）",
    col_state: "状态", col_handler: "处理人", col_due: "确认期限", col_age: "持续",
    ack: "确认", resolve: "处置完毕", comment: "备注",
    ack_selected: "确认所选（{0}）", bulk_note: "统一备注（例如：已派人处理）",
    select_all: "全选", nobody: "无人", acked_by: "{0}",
    due_in: "剩 {0}", overdue: "超时 {0}", overdue_badge: "超时",
    no_alerts: "此范围内没有告警。", none_matching: "没有符合搜索的告警。",
    limit: "限值 {0}", with_limit: "{0}（限值 {1}）", peak_now: "峰值 {0} · 当前 {1}",
    last_updated: "最后更新 {0}", never_updated: "尚未取得数据",
    offline: "与采集服务失去连接！画面上的数据停留在 {0}（{1}前），不代表当前情况。正在重试…",
    offline_never: "无法连接采集服务！画面上没有任何当前数据。正在重试…",
    mute: "声音：开", unmute: "已静音",
    new_red: "新的红色告警",
    confirm_resolve: "告警 #{0} 的读数仍然异常。确定要标记为处置完毕吗？",
    back: "← 全部告警", detector: "检测方式", value: "数值", where: "位置", started: "开始时间",
    escalation: "上报层级", acknowledged: "已确认", readings_now: "当前读数",
    abnormal: "异常", normal: "正常", ack_by: "确认期限", incident: "事件",
    leads_incident: "本单位事件的首条告警", leads_device_incident: "本设备事件的首条告警", part_of: "属于 #{0}",
    contact: "现场联系人", runbook: "处置预案", handler: "处理人", peak: "峰值",
    yes: "是", no: "否", ago: "{0}前",
    note_placeholder: "备注（做了什么、谁在处理）", timeline: "时间线",
    chart_caption: "{0} {1}（InfluxDB）：{2} 个点；红色虚线：告警开始，橙色虚线：限值",
    no_chart: "无图表：{0}",
    silence_new: "新建静默（维护窗口）", silence_target: "对象", silence_unit: "单位",
    silence_device: "设备编号", silence_minutes: "时长（分钟）", silence_reason: "原因",
    silence_create: "开始静默", silence_active: "生效中的静默", silence_none: "没有生效中的静默。",
    silence_until: "至 {0}", silence_by: "{0}：{1}", silence_created: "已创建静默 #{0}",
    map_no_coords: "没有单位登记了坐标（注册表中的 lat / lon）。",
    map_unplaced: "{0} 个单位没有坐标，未在地图上显示。",
    tile_url: "地图瓦片地址（可选，例如 https://tiles.example/{z}/{x}/{y}.png）",
    receiver_failing: " Webhook 接收方 {0}：{1}", failing_for: "失败已 {0}",
    delivering_again: "已恢复投递",
    receiver_detail: "连续失败 {0} 次；最后响应：{1}；{2}；死信 {3} 条",
    waiting: "{0} 条待发，最早的已等 {1}", nothing_waiting: "无待发",
    summary_title: "{0}告警", n_colour: "{0} {1}", n_overdue: "{0} 超时",
    s: "{0} 秒", min: "{0} 分钟", h: "{0} 小时", d: "{0} 天",
    silence: "设备失联", flapping: "频繁波动", incident_alerts: "本事件共 {0} 条告警，点击展开",
  },
  en: {
    title: "SmartUnit Monitor",
    sign_in: "Sign in", sign_out: "Sign out", your_name: "Your name (recorded with every action)",
    api_token: "API token", unknown_token: "Unknown token.",
    units: "Units", whole_city: "the whole city", showing: "Showing",
    unregistered: "Unregistered devices (each its own incident)", unregistered_unit: "unregistered device",
    service_itself: "The service itself", unit_collector: "collector", unit_network: "gateways and network",
    view_list: "Alerts", view_map: "Map", view_silences: "Silences / maintenance", view_cluster: "Cluster",
    cluster_instances: "Collector instances", cluster_partitions: "Partitions",
    cluster_col_instance: "Instance", cluster_col_count: "Partitions held", cluster_col_partitions: "Which",
    cluster_col_lease: "Lease renewed", cluster_col_partition: "Partition", cluster_col_owner: "Owner",
    cluster_col_lag: "Lag (unacknowledged messages)", cluster_this: "{0} (this instance)",
    cluster_unowned: "no owner (for {0})", cluster_lag: "{0} ({1} waiting, {2} delivered unacknowledged)",
    cluster_read: "read {0} ago", cluster_not_read: "not read yet", cluster_error: "cannot read: {0}",
    cluster_stream: "stream {0}: {1} messages, {2} replicas, leader {3}",
    family: "Family", all: "all", states: "States", active: "active", all_closed: "all, with closed",
    fam_chem: "chemical park", fam_camera: "crowds and traffic", fam_parking: "parking",
    fam_fire: "fire safety", fam_gateway: "gateways", fam_system: "system",
    search: "Search unit, device, number…",
    col_unit: "Unit / device", col_what: "What", col_value: "Peak · now (limit)",
    col_state: "State", col_handler: "Handled by", col_due: "Acknowledge by", col_age: "Age",
    ack: "Acknowledge", resolve: "Resolve", comment: "Comment",
    ack_selected: "Acknowledge selected ({0})", bulk_note: "One note for all (e.g. crew sent)",
    select_all: "select all", nobody: "nobody", acked_by: "{0}",
    due_in: "in {0}", overdue: "overdue {0}", overdue_badge: "OVERDUE",
    no_alerts: "No alerts here. All quiet.", none_matching: "No alert matches the search.",
    limit: "limit {0}", with_limit: "{0} (limit {1})", peak_now: "peak {0} · now {1}",
    last_updated: "Last updated {0}", never_updated: "No data yet",
    offline: "CONNECTION TO THE COLLECTOR LOST. What you see is from {0} ({1} ago), not now. Retrying…",
    offline_never: "CANNOT REACH THE COLLECTOR. Nothing on this screen is current. Retrying…",
    mute: "Sound on", unmute: "Muted",
    new_red: "New red alert",
    confirm_resolve: "The readings of alert #{0} are still abnormal. Resolve it anyway?",
    back: "← all alerts", detector: "Detector", value: "Value", where: "Where", started: "Started",
    escalation: "Escalation level", acknowledged: "Acknowledged", readings_now: "Readings now",
    abnormal: "abnormal", normal: "normal", ack_by: "Acknowledge by", incident: "Incident",
    leads_incident: "leads its unit's incident", leads_device_incident: "leads its device's incident",
    part_of: "part of #{0}",
    contact: "On-site contact", runbook: "Runbook", handler: "Handled by", peak: "Peak",
    yes: "yes", no: "no", ago: "{0} ago",
    note_placeholder: "Note for the record (what you did, who is on it)", timeline: "Timeline",
    chart_caption: "{0} {1} from InfluxDB: {2} points; dashed red: the alert's start, dashed orange: the limit",
    no_chart: "No chart: {0}",
    silence_new: "New silence (maintenance window)", silence_target: "Target", silence_unit: "Unit",
    silence_device: "Device id", silence_minutes: "Minutes", silence_reason: "Reason",
    silence_create: "Silence", silence_active: "Active silences", silence_none: "No active silence.",
    silence_until: "until {0}", silence_by: "{0}: {1}", silence_created: "Silence #{0} created",
    map_no_coords: "No unit has coordinates (lat / lon in the registry).",
    map_unplaced: "{0} unit(s) without coordinates are not on the map.",
    tile_url: "Map tile URL (optional, e.g. https://tiles.example/{z}/{x}/{y}.png)",
    receiver_failing: " Webhook receiver {0}: {1}", failing_for: "failing for {0}",
    delivering_again: "delivering again",
    receiver_detail: "{0} failed attempt(s) in a row; last answer: {1}; {2}; {3} in the dead-letter list",
    waiting: "{0} event(s) waiting, the oldest {1}", nothing_waiting: "nothing waiting",
    summary_title: "{0} alerts", n_colour: "{0} {1}", n_overdue: "{0} overdue",
    s: "{0} s", min: "{0} min", h: "{0} h", d: "{0} d",
    silence: "device silent", flapping: "flapping", incident_alerts: "{0} alerts in this incident: open",
  },
};

// Colours, states, quantities and detectors: the words an operator uses, not our ids.
const COLOUR_NAMES = {
  "zh-CN": { green: "正常", blue: "蓝色", yellow: "黄色", orange: "橙色", red: "红色" },
  en: { green: "green", blue: "blue", yellow: "yellow", orange: "orange", red: "red" },
};
const STATE_NAMES = {
  "zh-CN": {
    open: "待处理", dispatched: "已派发", acknowledged: "已确认", recovered: "已恢复",
    resolved: "已处置（观察中）", reopened: "重新打开", closed: "已关闭",
  },
  en: {
    open: "open", dispatched: "dispatched", acknowledged: "acknowledged", recovered: "recovered",
    resolved: "resolved", reopened: "reopened", closed: "closed",
  },
};
const EVENT_NAMES = {
  "zh-CN": {
    opened: "告警产生", colour_changed: "级别变化", dispatched: "已派发", acknowledged: "已确认",
    recovered: "读数恢复", condition_cleared: "读数恢复", condition_returned: "读数再次异常",
    resolved: "处置完毕", reopened: "重新打开", closed: "已关闭", commented: "备注",
    escalated: "逐级上报", flapping: "频繁波动", incident_joined: "并入事件",
    incident_rose: "事件升级", incident_escalated: "事件上报",
  },
  en: {},
};
const QUANTITIES = {
  lel_pct: { "zh-CN": "可燃气体", en: "Combustible gas", unit: "%LEL" },
  h2s_ppm: { "zh-CN": "硫化氢", en: "Hydrogen sulphide", unit: "ppm" },
  nh3_ppm: { "zh-CN": "氨气", en: "Ammonia", unit: "ppm" },
  cl2_ppm: { "zh-CN": "氯气", en: "Chlorine", unit: "ppm" },
  co_ppm: { "zh-CN": "一氧化碳", en: "Carbon monoxide", unit: "ppm" },
  o2_pct: { "zh-CN": "氧气", en: "Oxygen", unit: "%" },
  temp_c: { "zh-CN": "温度", en: "Temperature", unit: "°C" },
  pressure_kpa: { "zh-CN": "压力", en: "Pressure", unit: "kPa" },
  level_pct: { "zh-CN": "液位", en: "Level", unit: "%" },
  people: { "zh-CN": "人数", en: "People", unit: "" },
  occupied: { "zh-CN": "已占车位", en: "Spaces taken", unit: "" },
  free: { "zh-CN": "空余车位", en: "Spaces free", unit: "" },
  smoke: { "zh-CN": "烟感", en: "Smoke", unit: "" },
};
// Alerts name the rule that raised them (config/rules.presets.toml) or the service's own
// detectors; a rule of one's own is shown by its name.
const DETECTORS = {
  "zh-CN": {
    "combustible-gas": "可燃气体报警（GB/T 50493）", "combustible-gas-rising": "浓度上升过快",
    "combustible-gas-sensor-range": "读数超出量程（传感器故障）",
    "toxic-h2s": "有毒气体报警", "toxic-nh3": "有毒气体报警", "toxic-cl2": "有毒气体报警",
    "toxic-co": "有毒气体报警", "chem-stuck-sensor": "读数停滞（传感器故障）",
    "crowd-capacity": "人数接近安全容量", "parking-occupancy": "车位将满",
    "parking-stuck-sensor": "车位数停滞（传感器故障）",
    statistical: "统计异常", silence: "设备失联",
    "collector-behind": "采集服务处理滞后", "spool-nearly-full": "本地缓存将满",
    "spool-corrupt": "本地缓存损坏", "disk-full": "磁盘已满",
    "alert-store-unwritable": "告警库无法写入", "webhook-failing": "Webhook 接收方投递失败",
    "quantity-cap": "测量项超出上限", "series-cap": "时序数量超出上限",
    "rate-limited": "设备消息过多被限流", "rate-limited-devices": "多台设备被限流",
    "partition-unowned": "集群分区无人持有（数据未入库）", "partition-lag": "集群分区积压增长",
    "fire-smoke": "烟感报警", "fire-heat": "温感报警", "fire-water-pressure-low": "消防水压过低",
    "fire-stuck-sensor": "读数停滞（传感器故障）",
  },
  en: {
    "combustible-gas": "combustible gas alarm (GB/T 50493)", "combustible-gas-rising": "rising fast",
    "combustible-gas-sensor-range": "out of range (sensor fault)",
    "toxic-h2s": "toxic gas alarm", "toxic-nh3": "toxic gas alarm", "toxic-cl2": "toxic gas alarm",
    "toxic-co": "toxic gas alarm", "chem-stuck-sensor": "reading stuck (sensor fault)",
    "crowd-capacity": "crowd near safe capacity", "parking-occupancy": "lot nearly full",
    "parking-stuck-sensor": "count stuck (sensor fault)",
    statistical: "statistical anomaly", silence: "device silent",
    "collector-behind": "collector falling behind", "spool-nearly-full": "local spool nearly full",
    "spool-corrupt": "local spool damaged", "disk-full": "disk full",
    "alert-store-unwritable": "alert database not writable", "webhook-failing": "webhook receiver failing",
    "quantity-cap": "too many quantities", "series-cap": "too many series",
    "rate-limited": "device rate-limited", "rate-limited-devices": "devices rate-limited",
    "partition-unowned": "cluster partition without owner (readings not stored)",
    "partition-lag": "cluster partition falling behind",
    "fire-smoke": "smoke alarm", "fire-heat": "heat alarm",
    "fire-water-pressure-low": "fire-water pressure low", "fire-stuck-sensor": "reading stuck (sensor fault)",
  },
};

let LANG = localStorage.getItem("smartunit.lang") || "zh-CN";
if (!MESSAGES[LANG]) LANG = "zh-CN";

function t(key, ...args) {
  const text = MESSAGES[LANG][key] ?? MESSAGES.en[key] ?? key;
  return text.replace(/\{(\d)\}/g, (_, i) => String(args[Number(i)] ?? ""));
}

const colourName = (colour) => COLOUR_NAMES[LANG][colour] || colour;
const stateName = (state) => STATE_NAMES[LANG][state] || state;
const eventName = (type) => EVENT_NAMES[LANG][type] || type.replaceAll("_", " ");
const detectorName = (detector) => DETECTORS[LANG][detector] || detector;
const familyName = (family) => (MESSAGES[LANG][`fam_${family}`] ? t(`fam_${family}`) : family);
const quantityUnit = (quantity) => QUANTITIES[quantity]?.unit ?? "";

function quantityName(quantity) {
  if (!quantity) return t("silence");
  const known = QUANTITIES[quantity];
  if (!known) return quantity;
  return known.unit ? `${known[LANG]} ${known.unit}` : known[LANG];
}

function setLanguage(lang) {
  localStorage.setItem("smartunit.lang", lang);
  location.reload();
}

// Static text in index.html: data-t (textContent), data-t-placeholder, data-t-title.
function translatePage() {
  document.documentElement.lang = LANG;
  for (const node of document.querySelectorAll("[data-t]")) node.textContent = t(node.dataset.t);
  for (const node of document.querySelectorAll("[data-t-placeholder]")) {
    node.placeholder = t(node.dataset.tPlaceholder);
  }
}

// gridwatch statistics page (统计通报): a period's figures from /api/v1/review/stats, charts by
// Apache ECharts (vendored, /assets/vendor/echarts.min.js), a table per group with a drill-down
// to the cases behind each row, and the same report to download (XLSX, printable HTML, CSV,
// JSON). Uses app.js's helpers ($, api, el, lang, S).
"use strict";

const STATS_I18N = {
  zh: {
    s_period: "统计时段", s_day: "日", s_week: "周", s_month: "月", s_custom: "自定义", s_date: "日期",
    s_from: "起", s_to: "止（含）", s_group_by: "分组", s_department: "处置部门", s_shift: "班次",
    s_phase: "工作阶段", s_refresh: "统计", s_download: "导出", s_print: "打印版", s_trend: "每日趋势",
    s_units: "各管理单元", s_heat: "管理单元 × 场景", s_name: "名称", s_cases_of: "案件清单：",
    s_failed: "统计失败", s_none: "该时段无案件", s_cameras: "摄像头在线", s_uptime: "在线率", s_stalls: "卡顿", s_reconnects: "重连",
    discovered: "发现案件", reported_by_staff: "人工上报", unattended: "未经审核派发", reviewed: "已审核",
    awaiting_review: "待审核", rejected: "驳回（误报）", false_case_rate: "误报率", dispatched: "已派遣",
    handled: "已处置", handled_on_time: "按时处置", on_time_rate: "103060 按时率", overdue: "超时",
    self_resolved: "自行消除", reopened: "核查不通过重办", dispatch_median_s: "派遣用时中位数",
    dispatch_p90_s: "派遣用时 P90", handle_median_s: "处置用时中位数", handle_p90_s: "处置用时 P90",
    c_id: "案件编号", c_at: "发现时间", c_camera: "摄像头", c_scenario: "场景", c_review: "审核",
    c_dispatch: "派遣用时", c_handle: "处置用时", c_flags: "结果", st_unattended: "未经审核",
  },
  en: {
    s_period: "Period", s_day: "Day", s_week: "Week", s_month: "Month", s_custom: "Custom", s_date: "Date",
    s_from: "From", s_to: "To (incl.)", s_group_by: "Group by", s_department: "Department", s_shift: "Shift",
    s_phase: "Phase", s_refresh: "Show", s_download: "Download", s_print: "printable", s_trend: "Daily trend",
    s_units: "By unit", s_heat: "Units × scenarios", s_name: "Name", s_cases_of: "Cases: ",
    s_failed: "Statistics failed", s_none: "No cases in this period", s_cameras: "Camera health", s_uptime: "Uptime", s_stalls: "Stalls", s_reconnects: "Reconnects",
    discovered: "Discovered", reported_by_staff: "Reported by staff", unattended: "Unattended", reviewed: "Reviewed",
    awaiting_review: "Awaiting review", rejected: "Rejected (false)", false_case_rate: "False-case rate",
    dispatched: "Dispatched", handled: "Handled", handled_on_time: "Handled on time", on_time_rate: "103060 on-time rate",
    overdue: "Overdue", self_resolved: "Self-resolved", reopened: "Reopened", dispatch_median_s: "Time to dispatch, median",
    dispatch_p90_s: "Time to dispatch, p90", handle_median_s: "Time to handle, median", handle_p90_s: "Time to handle, p90",
    c_id: "Case", c_at: "Found at", c_camera: "Camera", c_scenario: "Scenario", c_review: "Review",
    c_dispatch: "To dispatch", c_handle: "To handle", c_flags: "Outcome", st_unattended: "unattended",
  },
};
Object.assign(I18N.zh, STATS_I18N.zh);
Object.assign(I18N.en, STATS_I18N.en);

// The figures the page shows, in order; rates as %, durations as m:ss.
const FIGURES = ["discovered", "reported_by_staff", "unattended", "reviewed", "awaiting_review", "rejected",
  "false_case_rate", "dispatched", "handled", "handled_on_time", "on_time_rate", "overdue", "self_resolved",
  "reopened", "dispatch_median_s", "dispatch_p90_s", "handle_median_s", "handle_p90_s"];
const CARD_FIGURES = ["discovered", "unattended", "reviewed", "rejected", "false_case_rate", "dispatched",
  "handled_on_time", "on_time_rate", "overdue", "reopened", "dispatch_median_s", "handle_median_s"];

const ST = { report: null, charts: {}, query: "" };

function shownFigure(key, v) {
  if (v === null || v === undefined) return "–";
  if (key.endsWith("_rate")) return (v * 100).toFixed(1) + "%";
  if (key.endsWith("_s")) return fmtDur(v);
  return String(v);
}

// The query string of the form's choice (shared by the figures, the drill-down and downloads).
function statsQuery() {
  const p = new URLSearchParams();
  const period = $("s-period").value;
  if (period === "custom") {
    p.set("from", $("s-from").value); p.set("to", $("s-to").value);
  } else {
    p.set("period", period);
    if ($("s-date").value) p.set("date", $("s-date").value);
  }
  const g = $("s-group").value;
  p.set("group_by", g === "unit" ? "unit" : "unit," + g);
  p.set("lang", lang);
  return p.toString();
}

function initStatsForm() {
  if (ST.ready) return;
  ST.ready = true;
  // Empty date: the server's today in the key area. Custom bounds start at the browser's today.
  const today = new Date().toLocaleDateString("sv-SE");
  $("s-from").value = today; $("s-to").value = today;
  $("s-period").addEventListener("change", () => {
    const custom = $("s-period").value === "custom";
    document.querySelectorAll(".s-custom").forEach((x) => { x.hidden = !custom; });
    $("s-date-box").hidden = custom;
  });
  $("stats-form").addEventListener("submit", (e) => { e.preventDefault(); loadStats(); });
  window.addEventListener("resize", () => Object.values(ST.charts).forEach((c) => c.resize()));
}

async function loadStats() {
  initStatsForm();
  ST.query = statsQuery();
  for (const f of ["xlsx", "html", "csv", "json"]) $("s-" + f).href = "/api/v1/review/stats/report?" + ST.query + "&format=" + f;
  const r = await api("/api/v1/review/stats?" + ST.query);
  if (!r.ok) { $("s-period-text").textContent = t("s_failed") + (r.data && r.data.error ? ": " + r.data.error : ""); return; }
  ST.report = r.data;
  renderStats();
}

function renderStats() {
  const rep = ST.report;
  $("s-period-text").textContent = rep.from + " – " + rep.to + (rep.total.discovered ? "" : " · " + t("s_none"));
  $("s-cards").replaceChildren(...CARD_FIGURES.map((k) =>
    el("div", { class: "s-card", "data-figure": k, "data-value": rep.total[k] === null ? "" : String(rep.total[k]) },
      el("div", { class: "v" }, shownFigure(k, rep.total[k])), el("div", { class: "k" }, t(k)))));
  renderCharts(rep);
  const chosen = $("s-group").value;
  const b = rep.breakdowns.find((x) => x.dimension === chosen) || rep.breakdowns[0];
  renderTable(b);
  $("s-cameras-body").replaceChildren(...rep.cameras.map((c) => el("tr", { "data-camera": c.camera },
    el("td", {}, c.name), el("td", { class: "n" }, shownFigure("uptime_rate", c.uptime)),
    el("td", { class: "n" }, String(c.stalls)), el("td", { class: "n" }, String(c.reconnects)))));
}

function chart(id) {
  const dom = $(id);
  if (ST.charts[id] && ST.charts[id].getDom() === dom && ST.lang === lang) return ST.charts[id];
  if (ST.charts[id]) ST.charts[id].dispose();
  ST.charts[id] = echarts.init(dom, "dark", { locale: lang === "en" ? "EN" : "ZH", renderer: "canvas" });
  return ST.charts[id];
}

// No animation: a command-centre screen redraws every refresh, and a still chart is what a
// screenshot or a printout should show.
function renderCharts(rep) {
  if (typeof echarts === "undefined") return;
  const series = ["discovered", "rejected", "dispatched", "overdue"];
  chart("s-chart-trend").setOption({
    backgroundColor: "transparent", animation: false, tooltip: { trigger: "axis" }, legend: { top: 0 },
    grid: { left: 40, right: 16, top: 32, bottom: 28 },
    xAxis: { type: "category", data: rep.trend.map((r) => r.key) }, yAxis: { type: "value", minInterval: 1 },
    series: series.map((k) => ({ name: t(k), type: "line", smooth: true, data: rep.trend.map((r) => r.figures[k]) })),
  }, true);
  const units = (rep.breakdowns.find((x) => x.dimension === "unit") || { rows: [] }).rows;
  chart("s-chart-units").setOption({
    backgroundColor: "transparent", animation: false, tooltip: { trigger: "axis" }, legend: { top: 0 },
    grid: { left: 40, right: 16, top: 32, bottom: 48 },
    xAxis: { type: "category", data: units.map((r) => r.name), axisLabel: { interval: 0, rotate: units.length > 6 ? 30 : 0 } },
    yAxis: { type: "value", minInterval: 1 },
    series: ["discovered", "handled_on_time", "overdue", "rejected"].map((k) => ({ name: t(k), type: "bar", data: units.map((r) => r.figures[k]) })),
  }, true);
  const h = rep.heat;
  const max = h.cells.reduce((m, c) => Math.max(m, c[2]), 1);
  chart("s-chart-heat").setOption({
    backgroundColor: "transparent", animation: false, tooltip: { position: "top" },
    grid: { left: 120, right: 24, top: 8, bottom: 90 },
    xAxis: { type: "category", data: h.scenarios.map((s) => s[1]), axisLabel: { interval: 0, rotate: 30 }, splitArea: { show: true } },
    yAxis: { type: "category", data: h.units.map((u) => u[1]), splitArea: { show: true } },
    visualMap: { min: 0, max, calculable: true, orient: "horizontal", left: "center", bottom: 0 },
    series: [{ name: t("discovered"), type: "heatmap", data: h.cells.map((c) => [c[1], c[0], c[2]]), label: { show: true, color: "#fff", textBorderColor: "#000", textBorderWidth: 2 } }],
  }, true);
  ST.lang = lang;
}

function renderTable(b) {
  if (!b) return;
  $("s-table-title").textContent = $("s-group").selectedOptions[0].textContent;
  $("s-table-head").replaceChildren(el("tr", {}, el("th", {}, t("s_name")), ...FIGURES.map((k) => el("th", {}, t(k)))));
  $("s-table-body").replaceChildren(...b.rows.map((row) => {
    const tr = el("tr", { "data-key": row.key, class: "s-row" }, el("td", {}, row.name || row.key || "—"),
      ...FIGURES.map((k) => el("td", { class: "n", "data-figure": k }, shownFigure(k, row.figures[k]))));
    tr.addEventListener("click", () => loadCases(b.dimension, row));
    return tr;
  }));
}

async function loadCases(dimension, row) {
  const r = await api("/api/v1/review/stats/cases?" + ST.query + "&dimension=" + encodeURIComponent(dimension) + "&key=" + encodeURIComponent(row.key));
  if (!r.ok) return;
  $("s-cases-title").hidden = false; $("s-cases").hidden = false;
  $("s-cases-title").textContent = t("s_cases_of") + (row.name || row.key) + " (" + r.data.length + ")";
  $("s-cases-head").replaceChildren(el("tr", {}, ...["c_id", "c_at", "c_camera", "c_scenario", "c_review", "c_dispatch", "c_handle", "c_flags"].map((k) => el("th", {}, t(k)))));
  $("s-cases-body").replaceChildren(...r.data.map((c) => el("tr", { "data-id": c.id },
    el("td", {}, c.id.slice(0, 8)), el("td", {}, c.detected_at), el("td", {}, c.camera), el("td", {}, c.scenario),
    el("td", {}, t("st_" + c.review) !== "st_" + c.review ? t("st_" + c.review) : c.review),
    el("td", {}, c.dispatch_s === null ? "–" : fmtDur(c.dispatch_s)), el("td", {}, c.handle_s === null ? "–" : fmtDur(c.handle_s)),
    el("td", {}, [c.on_time && t("handled_on_time"), c.overdue && t("overdue"), c.self_resolved && t("self_resolved"), c.reopened && t("reopened")].filter(Boolean).join(" · ")))));
}

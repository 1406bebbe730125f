// gridwatch review console: plain JavaScript, no build step, no CDN. Simplified Chinese by
// default, English on request (kept in localStorage). Keyboard first: J/K or arrows move,
// C/Enter confirms, X/R rejects, S scenario, M remark, / filters, 1-5 switch views.
"use strict";

const I18N = {
  zh: {
    title: "视频巡查审核台", tab_queue: "审核队列", tab_wall: "视频巡查墙", tab_history: "案件记录",
    tab_admin: "管理", tab_stats: "统计通报", logout: "退出", login_title: "登录", name: "账号", password: "密码", login: "登录",
    login_failed: "账号或密码错误", unit: "管理单元", group: "巡查编组", scenario: "场景", all: "全部",
    queue_empty: "暂无待审核画面", remark: "备注", suppress: "屏蔽（分钟）", confirm: "确认派发 (C)",
    reject: "误报驳回 (X)", keys: "J/K 或 ←/→ 上一条/下一条 · C 或 Enter 确认 · X 或 R 驳回 · S 场景 · M 备注 · / 筛选 · 1-5 切换页面",
    rotate: "轮巡", time: "时间", camera: "摄像头", state: "状态", reviewer: "审核人", time_left: "103060 剩余",
    attempts: "投递次数", export: "导出训练数据 (YOLO)", train_title: "区域状态训练", train: "训练", training: "训练中…", trained: "已训练并加载", train_refused: "未训练", audit: "审计日志", user: "用户", action: "操作",
    suppressions: "屏蔽中", suppressed_what: "屏蔽对象", until: "截止", whole_zone: "整个区域（审核人设置）",
    learned_object: "单个目标（多次驳回学得）",
    case: "案件", detail: "说明", zone: "区域", confidence: "置信度", waiting: "等待", objects: "目标数",
    items: "条待审核", confirmed_ok: "已确认，案件已派发", rejected_ok: "已驳回（误报）",
    handled_by: "已被 {by} 处理（{decision}）", live: "实时", offline: "离线", no_frame: "暂无画面",
    label_present: "有此情况", label_col: "区域状态标注", label_clear: "无", labelled_present: "已标注：有", labelled_clear: "已标注：无", label_failed: "标注失败（{status}）",
    deadline: "处置时限", every: "每 {n} 秒", overdue: "已超时",
    platform_status: "平台状态", verification: "视频核查", platform_title: "平台处置", level: "处置等级", update: "更新",
    v_checking: "核查中", v_passed: "核查通过", v_failed: "核查不通过", escalated: "已督办", reminded: "已提醒",
    u_pending: "待发送", u_delivered: "已送达", u_dead: "发送失败",
    st_awaiting_review: "待审核", st_pending: "待投递", st_delivered: "已派发", st_dead: "投递失败",
    st_rejected: "已驳回", st_confirmed: "已确认",
    h_streaming: "在线", h_stalled: "卡顿", h_connecting: "连接中", h_backoff: "重连中", h_inactive: "未在时段",
    h_ended: "已结束", h_failed: "故障", h_stopped: "已停止", h_standby: "其他节点分析", node: "节点", this_node: "本节点", h_unknown: "未知",
    layout: "画面", page: "页", live_waiting: "等待视频流", live_stills: "静态画面", live_unsupported: "浏览器无法播放",
    live_reconnecting: "重新连接中", report_draw: "上报", report_drawing: "在画面上框出问题", report_note: "说明（可选）",
    report_send: "提交案件", reported_ok: "已上报，案件已进入派发", report_failed: "上报失败（{status}）",
  },
  en: {
    title: "Video patrol review console", tab_queue: "Review queue", tab_wall: "Patrol wall", tab_history: "Case history",
    tab_admin: "Admin", tab_stats: "Statistics", logout: "Sign out", login_title: "Sign in", name: "Account", password: "Password", login: "Sign in",
    login_failed: "Wrong account or password", unit: "Unit", group: "Group", scenario: "Scenario", all: "All",
    queue_empty: "Nothing waiting for review", remark: "Remark", suppress: "Suppress (minutes)", confirm: "Confirm (C)",
    reject: "Reject (X)", keys: "J/K or ←/→ previous/next · C or Enter confirm · X or R reject · S scenario · M remark · / filter · 1-5 views",
    rotate: "Rotate", time: "Time", camera: "Camera", state: "State", reviewer: "Reviewer", time_left: "103060 left",
    attempts: "Attempts", export: "Export training data (YOLO)", train_title: "Train a zone state", train: "Train", training: "training…", trained: "trained and loaded", train_refused: "not trained", audit: "Audit log", user: "User", action: "Action",
    suppressions: "Active suppressions", suppressed_what: "Suppressed", until: "Until", whole_zone: "Whole zone (set by a reviewer)",
    learned_object: "One object (learned from repeated rejections)",
    case: "Case", detail: "Detail", zone: "Zone", confidence: "Confidence", waiting: "Waiting", objects: "Objects",
    items: "waiting", confirmed_ok: "Confirmed: the case is dispatched", rejected_ok: "Rejected (false positive)",
    handled_by: "Already handled by {by} ({decision})", live: "live", offline: "offline", no_frame: "no frame yet",
    label_present: "shows it", label_col: "Zone-state label", label_clear: "clear", labelled_present: "labelled: shows it", labelled_clear: "labelled: clear", label_failed: "label failed ({status})",
    deadline: "Deadline", every: "every {n} s", overdue: "overdue",
    platform_status: "Platform status", verification: "Camera check", platform_title: "On the platform", level: "Handling level", update: "Update",
    v_checking: "checking", v_passed: "verified (problem gone)", v_failed: "failed: reopened", escalated: "escalated", reminded: "reminded",
    u_pending: "pending", u_delivered: "delivered", u_dead: "dead letter",
    st_awaiting_review: "awaiting review", st_pending: "pending delivery", st_delivered: "dispatched", st_dead: "dead letter",
    st_rejected: "rejected", st_confirmed: "confirmed",
    h_streaming: "streaming", h_stalled: "stalled", h_connecting: "connecting", h_backoff: "reconnecting", h_inactive: "inactive",
    h_ended: "ended", h_failed: "failed", h_stopped: "stopped", h_standby: "on another node", node: "node", this_node: "this node", h_unknown: "unknown",
    layout: "Tiles", page: "page", live_waiting: "waiting for the stream", live_stills: "stills", live_unsupported: "cannot be played by this browser",
    live_reconnecting: "reconnecting", report_draw: "Report", report_drawing: "draw a box around the problem", report_note: "note (optional)",
    report_send: "File case", reported_ok: "reported: the case is on its way", report_failed: "report failed ({status})",
  },
};

let lang = localStorage.getItem("gw-lang") === "en" ? "en" : "zh";
const S = { csrf: null, role: null, meta: null, items: [], sel: 0, view: "queue", wall: null, wallIdx: 0, wallPage: 0, liveTiles: [], wallTimer: null, refreshTimer: null, events: null };
const $ = (id) => document.getElementById(id);

function t(key, vars) {
  let s = (I18N[lang][key] ?? I18N.zh[key] ?? key);
  for (const [k, v] of Object.entries(vars || {})) s = s.replace(`{${k}}`, v);
  return s;
}

function applyLang() {
  document.documentElement.lang = lang === "en" ? "en" : "zh-CN";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  $("lang").textContent = lang === "en" ? "中文" : "English";
  document.title = "gridwatch · " + t("title");
  if (S.meta) { fillFilters(); renderQueue(); }
  if (S.view === "wall" && S.wall) renderWall();
  if (S.view === "history") loadHistory();
  if (S.view === "stats") loadStats();
}

async function api(path, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  if (opts.method && opts.method !== "GET" && S.csrf) headers["X-CSRF-Token"] = S.csrf;
  const r = await fetch(path, { credentials: "same-origin", ...opts, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  let data = null;
  const ct = r.headers.get("content-type") || "";
  if (ct.includes("json")) data = await r.json();
  if (r.status === 401 && path !== "/api/v1/auth/login") showLogin();
  return { status: r.status, ok: r.ok, data };
}

function scenarioName(id, zh, en) {
  const s = S.meta && S.meta.scenarios.find((x) => x.id === id);
  if (s) return lang === "en" ? s.name_en : s.name_zh;
  return (lang === "en" ? en : zh) || id;
}
const fmtTime = (iso) => iso ? new Date(iso).toLocaleString(lang === "en" ? "en-GB" : "zh-CN", { hour12: false }) : "";
function fmtDur(sec) {
  const neg = sec < 0; sec = Math.abs(Math.round(sec));
  const h = Math.floor(sec / 3600), m = Math.floor((sec % 3600) / 60), s = sec % 60;
  const body = (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(s).padStart(2, "0");
  return (neg ? "-" : "") + body;
}
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

// ----- sign in -----
function showLogin() {
  $("app").hidden = true; $("tabs").hidden = true; $("logout").hidden = true;
  $("login-view").hidden = false; $("who").textContent = "";
  if (S.events) { S.events.close(); S.events = null; }
  $("login-name").focus();
}

async function start(me) {
  S.csrf = me.csrf; S.role = me.role;
  $("who").textContent = me.name + " (" + me.role + ")";
  $("login-view").hidden = true; $("app").hidden = false; $("tabs").hidden = false; $("logout").hidden = false;
  $("tab-admin").hidden = me.role !== "admin";
  const meta = await api("/api/v1/review/meta");
  if (!meta.ok) return;
  S.meta = meta.data;
  fillFilters();
  await loadQueue();
  connectEvents();
  show(S.view);
}

function connectEvents() {
  if (S.events) S.events.close();
  const es = new EventSource("/api/v1/review/events");
  S.events = es;
  es.addEventListener("queue", () => {
    $("live").classList.add("on"); $("live").textContent = t("live");
    scheduleRefresh();
  });
  es.onerror = () => { $("live").classList.remove("on"); $("live").textContent = t("offline"); };
}

// Several changes in a burst cost one reload.
function scheduleRefresh() {
  if (S.refreshTimer) return;
  S.refreshTimer = setTimeout(() => {
    S.refreshTimer = null;
    loadQueue();
    if (S.view === "history") loadHistory();
  }, 150);
}

// ----- queue -----
function fillFilters() {
  const fill = (sel, list, label) => {
    const cur = sel.value;
    sel.replaceChildren(el("option", { value: "" }, t("all")));
    for (const x of list) sel.append(el("option", { value: x.id }, label(x)));
    sel.value = cur;
  };
  fill($("f-unit"), S.meta.units, (u) => u.name);
  fill($("f-group"), S.meta.groups, (g) => g.name);
  fill($("f-scenario"), S.meta.scenarios, (s) => (lang === "en" ? s.name_en : s.name_zh));
  fill($("detail-scenario"), S.meta.scenarios, (s) => (lang === "en" ? s.name_en : s.name_zh));
}

async function loadQueue() {
  const q = new URLSearchParams();
  for (const [k, id] of [["unit", "f-unit"], ["group", "f-group"], ["scenario", "f-scenario"]]) if ($(id).value) q.set(k, $(id).value);
  const keep = S.items[S.sel] && S.items[S.sel].id;
  const r = await api("/api/v1/review/queue?" + q);
  if (!r.ok) return;
  S.items = r.data;
  const again = S.items.findIndex((x) => x.id === keep);
  S.sel = again >= 0 ? again : Math.min(S.sel, Math.max(0, S.items.length - 1));
  renderQueue();
}

function renderQueue() {
  const list = $("queue-list");
  list.replaceChildren();
  S.items.forEach((it, i) => {
    const li = el("li", { "data-id": it.id, class: i === S.sel ? "selected" : "" },
      el("div", { class: "l1" }, scenarioName(it.scenario, it.scenario_name_zh, it.scenario_name_en), el("span", { class: "conf" }, Math.round(it.confidence * 100) + "%")),
      el("div", { class: "l2" }, it.camera_name + " · " + it.unit_name + " · " + it.zone_name),
      el("div", { class: "l2" }, fmtTime(it.confirmed_at) + " · " + t("waiting") + " " + fmtDur(it.waiting_seconds)));
    li.addEventListener("click", () => { S.sel = i; renderQueue(); });
    list.append(li);
  });
  $("queue-count").textContent = S.items.length + " " + t("items");
  const it = S.items[S.sel];
  $("detail-empty").hidden = !!it; $("detail-body").hidden = !it;
  if (!it) return;
  const li = list.children[S.sel]; if (li) li.scrollIntoView({ block: "nearest" });
  if ($("detail-img").dataset.id !== it.id) {
    $("detail-img").src = "/api/v1/review/items/" + encodeURIComponent(it.id) + "/snapshot.jpg";
    $("detail-img").dataset.id = it.id;
    $("detail-remark").value = ""; $("detail-suppress").value = "0"; $("detail-msg").textContent = "";
    $("detail-scenario").value = it.scenario;
  }
  const meta = [[t("scenario"), scenarioName(it.scenario, it.scenario_name_zh, it.scenario_name_en)], [t("confidence"), Math.round(it.confidence * 100) + "%"],
    [t("camera"), it.camera_name], [t("unit"), it.unit_name], [t("group"), it.group_name], [t("zone"), it.zone_name],
    [t("time"), fmtTime(it.confirmed_at)], [t("waiting"), fmtDur(it.waiting_seconds)], [t("objects"), String(it.objects)],
    [t("deadline"), fmtTime(it.deadline_at)], [t("remark"), it.remark || "—"]];
  $("detail-meta").replaceChildren(...meta.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function move(d) {
  if (!S.items.length) return;
  S.sel = Math.max(0, Math.min(S.items.length - 1, S.sel + d));
  renderQueue();
}

async function decide(kind) {
  const it = S.items[S.sel];
  if (!it) return;
  const body = {};
  const remark = $("detail-remark").value.trim();
  if (remark) body.remark = remark;
  if (kind === "confirm") {
    if ($("detail-scenario").value && $("detail-scenario").value !== it.scenario) body.scenario = $("detail-scenario").value;
  } else {
    const m = parseInt($("detail-suppress").value, 10);
    if (m > 0) body.suppress_minutes = m;
  }
  const r = await api("/api/v1/review/items/" + encodeURIComponent(it.id) + "/" + kind, { method: "POST", body });
  const msg = $("detail-msg");
  if (r.ok) msg.textContent = t(kind === "confirm" ? "confirmed_ok" : "rejected_ok");
  else if (r.status === 409) msg.textContent = t("handled_by", { by: r.data.handled_by || "?", decision: t("st_" + r.data.decision) });
  else msg.textContent = (r.data && r.data.error) || ("HTTP " + r.status);
  document.body.dataset.lastDecision = kind + ":" + r.status;
  await loadQueue();
  // The message of the item just handled stays visible while the next one is shown.
  $("detail-msg").textContent = msg.textContent;
}

// ----- wall -----
// The shown group's cameras in a 1/4/9 grid, a page at a time; rotation (轮巡) turns the page,
// then the group. Each tile plays the camera live (live.js) or shows its analysed stills.
async function loadWall() {
  const r = await api("/api/v1/review/wall");
  if (!r.ok) return;
  S.wall = r.data;
  if (S.wallIdx >= S.wall.groups.length) { S.wallIdx = 0; S.wallPage = 0; }
  $("wall-seconds").textContent = "(" + t("every", { n: S.wall.rotation_seconds }) + ")";
  renderWall();
}

function wallLayout() {
  const n = Number(localStorage.getItem("gw-wall-layout"));
  return [1, 4, 9].includes(n) ? n : 4;
}

function wallPages(g) {
  return Math.max(1, Math.ceil(g.cameras.length / wallLayout()));
}

function closeLiveTiles() {
  for (const l of S.liveTiles || []) l.close();
  S.liveTiles = [];
}

function renderWall() {
  closeLiveTiles();
  const g = S.wall.groups[S.wallIdx];
  const grid = $("wall-grid");
  grid.replaceChildren();
  if (!g) return;
  const n = wallLayout(), pages = wallPages(g);
  if ((S.wallPage || 0) >= pages) S.wallPage = 0;
  const page = S.wallPage || 0;
  grid.dataset.layout = String(n);
  document.querySelectorAll("#wall-layout button").forEach((b) => b.classList.toggle("active", Number(b.dataset.n) === n));
  // Cluster mode: which node analyses this group (this console shows this node's frames).
  const owner = S.wall.node ? " · " + t("node") + " " + (g.owner_node || "—") + (g.owner_node === S.wall.node ? " (" + t("this_node") + ")" : "") : "";
  const paging = pages > 1 ? " · " + t("page") + " " + (page + 1) + "/" + pages : "";
  $("wall-group").textContent = g.name + " · " + g.unit_name + " (" + (S.wallIdx + 1) + "/" + S.wall.groups.length + ")" + paging + owner;
  for (const c of g.cameras.slice(page * n, page * n + n)) grid.append(wallTile(c));
}

function wallTile(c) {
  const img = el("img", { alt: t("no_frame"), src: c.frame_url + "?t=" + Date.now() });
  img.dataset.camera = c.id;
  const video = el("video", { muted: true, autoplay: true, playsInline: true, hidden: true });
  const canvas = el("canvas", { class: "overlay" });
  const badge = el("span", { class: "badge" });
  const screen = el("div", { class: "screen" }, img, video, canvas, badge);
  const tile = el("div", { class: "tile", "data-camera": c.id }, screen,
    el("div", { class: "cap" }, el("span", {}, c.name), el("span", { class: "health " + c.state }, t("h_" + c.state))));
  screen.addEventListener("click", () => { if (!tile.classList.contains("drawing")) enlarge(tile); });
  video.addEventListener("loadedmetadata", () => tile.style.setProperty("--aspect", video.videoWidth / video.videoHeight));
  tile.append(reportForm(tile, screen, c), ...(c.zones || []).map((z) => zoneLabeller(c, z)));
  S.liveTiles.push(new LiveTile(c, { tile, screen, video, img, canvas, badge }));
  return tile;
}

// Click a tile: it fills the window (click again or Esc to go back).
function enlarge(tile) {
  const on = !tile.classList.contains("enlarged");
  document.querySelectorAll("#wall-grid .tile.enlarged").forEach((x) => x.classList.remove("enlarged"));
  tile.classList.toggle("enlarged", on);
}

function setWallLayout(n) {
  localStorage.setItem("gw-wall-layout", String(n));
  S.wallPage = 0;
  if (S.wall) renderWall();
}

// "This zone shows X" / "clear": a zone-state label on the frame the wall shows, for
// `gridwatch learn --camera --zone --state`.
function zoneLabeller(c, z) {
  const pick = el("select", { class: "label-state" }, ...z.scenarios.map((s) => el("option", { value: s }, scenarioName(s))));
  const said = el("span", { class: "label-said" });
  const send = async (present) => {
    const r = await api("/api/v1/review/wall/" + encodeURIComponent(c.id) + "/zones/" + encodeURIComponent(z.id) + "/labels",
      { method: "POST", body: { state: pick.value, present } });
    said.textContent = r.status === 201 ? t(present ? "labelled_present" : "labelled_clear") : t("label_failed", { status: r.status });
  };
  return el("div", { class: "labeller", "data-zone": z.id },
    el("span", {}, (z.name || z.id) + ": "), pick,
    el("button", { class: "label-present", onclick: () => send(true) }, t("label_present")),
    el("button", { class: "label-clear", onclick: () => send(false) }, t("label_clear")), said);
}

function wallTick() {
  if (S.view !== "wall" || !S.wall) return;
  // Rotation never turns away from a tile someone is looking at closely or drawing on.
  const busy = document.querySelector("#wall-grid .tile.enlarged, #wall-grid .tile.drawing");
  const now = Date.now();
  if ($("wall-rotate").checked && !busy && now - (S.wallTurned || 0) >= S.wall.rotation_seconds * 1000) {
    const g = S.wall.groups[S.wallIdx];
    if (g && (S.wallPage || 0) + 1 < wallPages(g)) { S.wallTurned = now; S.wallPage = (S.wallPage || 0) + 1; renderWall(); return; }
    if (S.wall.groups.length > 1 || (g && wallPages(g) > 1)) { turnWall(1); return; }
  }
  refreshHealth();
  // Stills refresh on tiles that do not play video.
  document.querySelectorAll("#wall-grid .tile:not([data-mode='video']) img").forEach((img) => {
    img.src = "/api/v1/review/wall/" + encodeURIComponent(img.dataset.camera) + "/frame.jpg?t=" + now;
  });
}

// Each shown camera's health (streaming, stalled, reconnecting …), without redrawing the tiles.
async function refreshHealth() {
  const r = await api("/api/v1/review/wall");
  if (!r.ok) return;
  for (const c of r.data.groups.flatMap((g) => g.cameras)) {
    const h = document.querySelector("#wall-grid .tile[data-camera='" + CSS.escape(c.id) + "'] .health");
    if (h) { h.className = "health " + c.state; h.textContent = t("h_" + c.state); }
  }
}

function turnWall(d) {
  if (!S.wall || !S.wall.groups.length) return;
  S.wallTurned = Date.now();
  S.wallPage = 0;
  S.wallIdx = (S.wallIdx + d + S.wall.groups.length) % S.wall.groups.length;
  loadWall();
}

// ----- history and admin -----
async function loadHistory() {
  const r = await api("/api/v1/review/cases?limit=200");
  if (!r.ok) return;
  $("history-body").replaceChildren(...r.data.map((h) => {
    const left = el("td", { class: h.time_left_seconds < 0 ? "overdue" : "" }, h.time_left_seconds < 0 ? t("overdue") + " " + fmtDur(h.time_left_seconds) : fmtDur(h.time_left_seconds));
    return el("tr", { "data-id": h.id }, el("td", {}, fmtTime(h.created_at)), el("td", {}, scenarioName(h.scenario, h.scenario_name_zh, h.scenario_name_en)),
      el("td", {}, h.camera_name), el("td", {}, h.unit_name), el("td", {}, t("st_" + h.state)), el("td", {}, h.reviewer || "—"), left, el("td", {}, String(h.attempts)),
      el("td", {}, h.frame_kept ? caseLabeller(h) : "—"), platformCells(h.platform || {}));
  }));
  for (const row of $("history-body").children) row.addEventListener("click", (e) => {
    if (e.target.tagName !== "BUTTON") loadPlatform(row.dataset.id);
  });
  if (S.platformCase) loadPlatform(S.platformCase);
}

// The platform's status (立案 … 结案, 退回) and the camera's verification of a case.
function platformCells(p) {
  const status = el("td", { class: "platform-status" }, p.status ? (lang === "zh" ? p.status_zh : p.status) : "—");
  if (p.escalated) status.append(" · ", el("span", { class: "overdue escalated" }, t("escalated")));
  const v = el("td", { class: "verification " + (p.verification || "") }, p.verification ? t("v_" + p.verification) : "—");
  const frag = document.createDocumentFragment();
  frag.append(status, v);
  return frag;
}

// One case's life on the platform: statuses, verification rounds, its 103060 clock (the
// level a reviewer may change) and the updates sent.
async function loadPlatform(id) {
  const r = await api("/api/v1/review/items/" + encodeURIComponent(id) + "/platform");
  if (!r.ok) return;
  S.platformCase = id;
  const p = r.data;
  $("case-platform").hidden = false;
  $("cp-case").textContent = id;
  const c = p.clock;
  $("cp-level").value = c ? c.level : "general";
  $("cp-level").disabled = !c;
  $("cp-level").onchange = async () => {
    await api("/api/v1/review/items/" + encodeURIComponent(id) + "/level", { method: "POST", body: { level: $("cp-level").value } });
    loadPlatform(id);
  };
  $("cp-deadline").textContent = c && c.deadline_ms ? fmtTime(new Date(c.deadline_ms).toISOString()) : "—";
  $("cp-clock").textContent = c ? [c.reminded_at_ms ? t("reminded") : "", c.escalated_at_ms ? t("escalated") : ""].filter(Boolean).join(" · ") : "";
  const at = (ms) => (ms ? fmtTime(new Date(ms).toISOString()) : "—");
  $("cp-statuses").replaceChildren(...p.statuses.map((x) => el("tr", { class: "status-row" },
    el("td", {}, at(x.at_ms)), el("td", {}, lang === "zh" ? x.status_zh : x.status), el("td", {}, x.note || ""), el("td", {}, x.via + " · " + x.target))));
  $("cp-verifications").replaceChildren(...p.verifications.map((v) => el("tr", { class: "verification-row " + v.state },
    el("td", {}, "#" + v.round), el("td", {}, t("v_" + v.state)), el("td", {}, at(v.decided_at_ms || v.requested_at_ms)))));
  $("cp-updates").replaceChildren(...p.updates.map((u) => el("tr", { class: "update-row " + u.kind },
    el("td", {}, lang === "zh" ? u.kind_zh : u.kind), el("td", {}, t("u_" + u.state)), el("td", {}, at(u.delivered_at_ms || u.created_at_ms)), el("td", {}, String(u.attempts)))));
}

// "This zone shows X" / "clear" on the clean frame a case kept (a held case's, a learned
// zone state's): a label of the case's scenario in its zone, for `gridwatch learn`.
function caseLabeller(h) {
  const said = el("span", { class: "label-said" });
  const send = async (present) => {
    const r = await api("/api/v1/review/items/" + encodeURIComponent(h.id) + "/labels", { method: "POST", body: { state: h.scenario, present } });
    said.textContent = r.status === 201 ? t(present ? "labelled_present" : "labelled_clear") : t("label_failed", { status: r.status });
  };
  return el("span", { class: "labeller" },
    el("button", { class: "label-present", onclick: () => send(true) }, t("label_present")),
    el("button", { class: "label-clear", onclick: () => send(false) }, t("label_clear")), said);
}

async function loadSuppressions() {
  const r = await api("/api/v1/review/suppressions");
  if (!r.ok) return;
  $("suppressions-body").replaceChildren(...r.data.map((x) => {
    const what = x.object ? t("learned_object") + " [" + x.object.map((v) => v.toFixed(2)).join(", ") + "]" : t("whole_zone");
    return el("tr", { class: x.object ? "object" : "zone" }, el("td", {}, x.camera), el("td", {}, x.zone),
      el("td", {}, scenarioName(x.scenario)), el("td", {}, what), el("td", {}, fmtTime(x.until)));
  }));
}

async function loadAudit() {
  const r = await api("/api/v1/review/audit?limit=200");
  if (!r.ok) return;
  $("audit-body").replaceChildren(...r.data.map((a) => el("tr", {}, el("td", {}, fmtTime(a.at)), el("td", {}, a.user), el("td", {}, a.action), el("td", {}, a.case_id || ""), el("td", {}, a.detail || ""))));
}

function show(view) {
  S.view = view;
  for (const v of ["queue", "wall", "history", "stats", "admin"]) {
    $(v + "-view").hidden = v !== view;
    $("tab-" + v).classList.toggle("active", v === view);
  }
  if (view === "wall") { S.wallTurned = Date.now(); loadWall(); } else closeLiveTiles();
  if (view === "history") { loadHistory(); loadSuppressions(); }
  if (view === "stats") loadStats();
  if (view === "admin") { loadAudit(); loadTrainer(); }
}

// ----- wiring -----
document.addEventListener("DOMContentLoaded", async () => {
  applyLang();
  $("lang").addEventListener("click", () => { lang = lang === "en" ? "zh" : "en"; localStorage.setItem("gw-lang", lang); applyLang(); });
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const r = await api("/api/v1/auth/login", { method: "POST", body: { name: $("login-name").value, password: $("login-password").value } });
    if (!r.ok) { $("login-error").textContent = t("login_failed"); return; }
    $("login-error").textContent = ""; $("login-password").value = "";
    start(r.data);
  });
  $("logout").addEventListener("click", async () => { await api("/api/v1/auth/logout", { method: "POST" }); S.csrf = null; showLogin(); });
  document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => show(b.dataset.view)));
  for (const id of ["f-unit", "f-group", "f-scenario"]) $(id).addEventListener("change", () => { S.sel = 0; loadQueue(); });
  $("confirm").addEventListener("click", () => decide("confirm"));
  $("reject").addEventListener("click", () => decide("reject"));
  $("wall-prev").addEventListener("click", () => turnWall(-1));
  $("wall-next").addEventListener("click", () => turnWall(1));
  document.querySelectorAll("#wall-layout button").forEach((b) => b.addEventListener("click", () => setWallLayout(Number(b.dataset.n))));
  S.wallTimer = setInterval(wallTick, 2000);
  setInterval(() => { if (S.view === "queue" && S.items.length) renderQueue(); }, 5000);

  document.addEventListener("keydown", (e) => {
    if ($("app").hidden || e.ctrlKey || e.metaKey || e.altKey) return;
    const tag = e.target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    const k = e.key;
    // Enter on a focused button is that button's click: do not also confirm.
    if (tag === "BUTTON" && (k === "Enter" || k === " ")) return;
    if (/^[1-5]$/.test(k)) {
      const view = ["queue", "wall", "history", "stats", "admin"][+k - 1];
      if (view !== "admin" || S.role === "admin") show(view);
      return;
    }
    if (S.view === "wall") {
      if (k === "Escape") document.querySelectorAll("#wall-grid .tile.enlarged").forEach((x) => x.classList.remove("enlarged"));
      if (k === "ArrowRight" || k === "j") turnWall(1);
      if (k === "ArrowLeft" || k === "k") turnWall(-1);
      return;
    }
    if (S.view !== "queue") return;
    if (k === "j" || k === "ArrowDown" || k === "ArrowRight") { e.preventDefault(); move(1); }
    else if (k === "k" || k === "ArrowUp" || k === "ArrowLeft") { e.preventDefault(); move(-1); }
    else if (k === "c" || k === "Enter") { e.preventDefault(); decide("confirm"); }
    else if (k === "x" || k === "r") { e.preventDefault(); decide("reject"); }
    else if (k === "s") { e.preventDefault(); $("detail-scenario").focus(); }
    else if (k === "m") { e.preventDefault(); $("detail-remark").focus(); }
    else if (k === "/") { e.preventDefault(); $("f-unit").focus(); }
  });

  const me = await api("/api/v1/auth/me");
  if (me.ok) start(me.data); else showLogin();
});

// The admin's "train": `gridwatch learn` on the labels staff set for a camera's zone and
// state; the card is loaded at once. Refusals say what is missing.
async function loadTrainer() {
  const r = await api("/api/v1/review/wall");
  if (!r.ok) return;
  const cameras = r.data.groups.flatMap((g) => g.cameras).filter((c) => (c.zones || []).length);
  const cam = $("train-camera"), zone = $("train-zone"), state = $("train-state");
  const fillStates = () => {
    const z = (cameras.find((c) => c.id === cam.value) || { zones: [] }).zones.find((z) => z.id === zone.value);
    state.replaceChildren(...(z ? z.scenarios : []).map((s) => el("option", { value: s }, scenarioName(s))));
  };
  const fillZones = () => {
    const c = cameras.find((c) => c.id === cam.value);
    zone.replaceChildren(...(c ? c.zones : []).map((z) => el("option", { value: z.id }, z.name || z.id)));
    fillStates();
  };
  cam.replaceChildren(...cameras.map((c) => el("option", { value: c.id }, c.name)));
  cam.onchange = fillZones;
  zone.onchange = fillStates;
  fillZones();
  $("train-go").onclick = async () => {
    const out = $("train-out");
    out.textContent = t("training");
    const res = await api("/api/v1/review/admin/train", { method: "POST", body: { camera: cam.value, zone: zone.value, state: state.value } });
    out.textContent = res.status === 201 ? t("trained") + "\n" + res.data.lines.join("\n")
      : t("train_refused") + " (" + res.status + "): " + ((res.data && res.data.error) || "");
    out.className = res.status === 201 ? "ok" : "refused";
    loadAudit();
  };
}

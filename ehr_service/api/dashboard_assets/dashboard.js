// The operations dashboard: reads /dashboard/api/* with the operator's bearer token
// (kept in this tab's sessionStorage only) and draws them with plotly.js.
"use strict";

const TEXT = {
  zh: {
    title: "区域运行监控", switch: "English", signout: "退出", signin: "登录",
    token: "运维令牌（ehr/operations 或 ehr/admin）", from: "开始", to: "结束", refresh: "刷新",
    recognition: "检查检验结果互认", offered: "可互认提示", accepted: "已互认", retested: "重新检查",
    rate: "互认率", avoided: "减少检查", cost: "节约费用（元）", byItem: "按项目", group: "分组",
    operations: "交换与审计", dead: "死信", chain: "审计链长度", unsealed: "待封存事件",
    lag: "最早待封存（秒）", reqrate: "请求/秒", ingest: "写入/秒", partners: "合作方密钥",
    partner: "合作方", region: "地区", key: "密钥", state: "状态", updated: "更新于",
    daily: "每日互认", byItemChart: "各项目互认率", byInstitution: "各机构互认率",
    byRegion: "各地区互认率", reasons: "重新检查理由", outbox: "交换发件箱（按合作方、状态）",
    traffic: "请求（按状态）", refused: "令牌无效或权限不足（需要 ehr/operations 或 ehr/admin）",
    none: "无",
    reason: {
      "condition-changed": "病情变化", "rapid-change": "结果随病程变化快",
      "critical-decision": "重大医疗决策", "emergency": "急诊或抢救",
      "forensic-assessment": "司法鉴定、伤残或退休评定", "other": "其他",
    },
    states: { active: "启用", retired: "停用", revoked: "吊销" },
  },
  en: {
    title: "Regional operations", switch: "中文", signout: "Sign out", signin: "Sign in",
    token: "Operator token (ehr/operations or ehr/admin)", from: "From", to: "To",
    refresh: "Refresh", recognition: "Result recognition", offered: "Offered",
    accepted: "Recognised", retested: "Re-tested", rate: "Recognition rate",
    avoided: "Tests avoided", cost: "Cost avoided (CNY)", byItem: "By item", group: "Group",
    operations: "Exchange and audit", dead: "Dead letters", chain: "Audit chain length",
    unsealed: "Unsealed events", lag: "Oldest unsealed (s)", reqrate: "Requests/s",
    ingest: "Writes/s", partners: "Partner keys", partner: "Partner", region: "Region",
    key: "Key", state: "State", updated: "Updated", daily: "Recognition per day",
    byItemChart: "Recognition rate by item", byInstitution: "Recognition rate by institution",
    byRegion: "Recognition rate by region", reasons: "Re-test reasons",
    outbox: "Exchange outbox by partner and state", traffic: "Requests by status",
    refused: "Token rejected or lacking the ehr/operations or ehr/admin scope", none: "none",
    reason: {
      "condition-changed": "Condition changed", "rapid-change": "Value changes quickly",
      "critical-decision": "Critical decision", "emergency": "Emergency",
      "forensic-assessment": "Forensic or disability assessment", "other": "Other",
    },
    states: { active: "active", retired: "retired", revoked: "revoked" },
  },
};

const $ = (id) => document.getElementById(id);
let language = localStorage.getItem("ehr.lang")
  || ((navigator.language || "zh").toLowerCase().startsWith("en") ? "en" : "zh");
let recognition = null;
let operations = null;
let previous = null; // the counters of the previous poll, for rates
let rates = { requests: null, writes: null };
const t = (key) => TEXT[language][key];

function translate() {
  document.documentElement.lang = language;
  document.title = t("title");
  for (const node of document.querySelectorAll("[data-i18n]")) {
    node.textContent = t(node.dataset.i18n);
  }
}

async function api(path) {
  const response = await fetch(path, {
    headers: { Authorization: "Bearer " + sessionStorage.getItem("ehr.token") },
    cache: "no-store",
  });
  if (response.status === 401 || response.status === 403) {
    signOut(t("refused"));
    throw new Error("refused");
  }
  if (!response.ok) {
    const outcome = await response.json().catch(() => ({}));
    const message = ((outcome.issue || [])[0] || {}).diagnostics || response.statusText;
    $("error").textContent = message;
    throw new Error(message);
  }
  return response.json();
}

const percent = (rate) => (rate === null || rate === undefined ? "-" : (rate * 100).toFixed(1) + "%");
const layout = (title, extra) => Object.assign(
  { title: { text: title, font: { size: 14 } }, margin: { t: 40, r: 20, b: 60, l: 50 },
    height: 300, legend: { orientation: "h" } }, extra || {});
const plot = (id, data, title, extra) =>
  Plotly.react($(id), data, layout(title, extra), { displaylogo: false, responsive: true });

function rateBars(id, rows, title) {
  const shown = rows.filter((r) => r.offered > 0).slice(0, 20);
  plot(id, [{ type: "bar", x: shown.map((r) => r.group), y: shown.map((r) => r.rate),
              text: shown.map((r) => percent(r.rate)), textposition: "auto",
              hovertext: shown.map((r) => `${t("offered")} ${r.offered}, ${t("accepted")} ${r.accepted}`) }],
       title, { yaxis: { tickformat: ".0%", range: [0, 1] } });
}

function drawRecognition() {
  const data = recognition;
  const total = data.total;
  $("kpi-offered").textContent = total.offered;
  $("kpi-accepted").textContent = total.accepted;
  $("kpi-retested").textContent = total.retested;
  $("kpi-rate").textContent = percent(total.rate);
  $("kpi-avoided").textContent = total.testsAvoided;
  $("kpi-cost").textContent = total.costAvoided.toFixed(2);
  const days = data.daily.map((d) => d.day);
  plot("chart-daily", [
    { type: "bar", name: t("offered"), x: days, y: data.daily.map((d) => d.offered) },
    { type: "bar", name: t("accepted"), x: days, y: data.daily.map((d) => d.accepted) },
    { type: "bar", name: t("retested"), x: days, y: data.daily.map((d) => d.retested) },
    { type: "scatter", mode: "lines+markers", name: t("rate"), x: days,
      y: data.daily.map((d) => d.rate), yaxis: "y2" },
  ], t("daily"), { barmode: "group",
                   yaxis2: { overlaying: "y", side: "right", tickformat: ".0%", range: [0, 1] } });
  rateBars("chart-item", data.item, t("byItemChart"));
  rateBars("chart-institution", data.institution, t("byInstitution"));
  rateBars("chart-region", data.region, t("byRegion"));
  const reasons = Object.entries(total.reasons);
  plot("chart-reasons", [{ type: "pie", hole: 0.4,
    labels: reasons.map(([code]) => TEXT[language].reason[code] || code),
    values: reasons.map(([, count]) => count) }], t("reasons"));
  const body = $("table-item").tBodies[0];
  body.replaceChildren();
  for (const row of data.item) {
    const line = body.insertRow();
    line.dataset.group = row.group;
    for (const [name, value] of [["group", row.group], ["offered", row.offered],
        ["accepted", row.accepted], ["retested", row.retested], ["rate", percent(row.rate)],
        ["cost", row.costAvoided.toFixed(2)]]) {
      const cell = line.insertCell();
      cell.className = name;
      cell.textContent = value;
    }
  }
}

function drawOperations() {
  const data = operations;
  $("kpi-dead").textContent = data.deadLetters;
  $("kpi-chain").textContent = data.audit.chain_length ?? "-";
  $("kpi-unsealed").textContent = data.audit.unsealed_events ?? "-";
  $("kpi-lag").textContent = (data.audit.unsealed_oldest_seconds ?? 0).toFixed(0);
  $("kpi-reqrate").textContent = rates.requests === null ? "-" : rates.requests.toFixed(2);
  $("kpi-ingest").textContent = rates.writes === null ? "-" : rates.writes.toFixed(2);
  const states = [...new Set(Object.values(data.outbox).flatMap((s) => Object.keys(s)))].sort();
  const partners = Object.keys(data.outbox);
  plot("chart-outbox", states.map((state) => ({ type: "bar", name: state, x: partners,
    y: partners.map((p) => data.outbox[p][state] || 0) })), t("outbox"), { barmode: "stack" });
  const statuses = Object.entries(data.requests.byStatus);
  plot("chart-traffic", [{ type: "bar", x: statuses.map(([s]) => s),
    y: statuses.map(([, n]) => n) }], t("traffic"));
  const body = $("table-partners").tBodies[0];
  body.replaceChildren();
  for (const partner of data.partners) {
    for (const key of partner.keys.length ? partner.keys : [{ kid: t("none"), status: "-" }]) {
      const line = body.insertRow();
      for (const value of [partner.partner, partner.region, key.kid,
          TEXT[language].states[key.status] || key.status]) {
        line.insertCell().textContent = value;
      }
    }
  }
}

async function loadRecognition() {
  const query = new URLSearchParams({ from: $("from").value, to: $("to").value });
  recognition = await api("/dashboard/api/recognition?" + query);
  $("error").textContent = "";
  drawRecognition();
}

async function loadOperations() {
  operations = await api("/dashboard/api/operations");
  const now = Date.now() / 1000;
  const counters = { at: now, requests: operations.requests.total, writes: operations.writes.total };
  if (previous && now > previous.at) {
    rates = { requests: (counters.requests - previous.requests) / (now - previous.at),
              writes: (counters.writes - previous.writes) / (now - previous.at) };
  }
  previous = counters;
  drawOperations();
}

async function refresh() {
  await Promise.all([loadRecognition(), loadOperations()]);
  $("updated").textContent = `${t("updated")} ${new Date().toLocaleTimeString()}`;
  document.body.dataset.ready = "1";
}

function day(offset) {
  const date = new Date(Date.now() + 8 * 3600 * 1000 + offset * 86400 * 1000); // CST days
  return date.toISOString().slice(0, 10);
}

function signOut(message) {
  sessionStorage.removeItem("ehr.token");
  $("board").hidden = true;
  $("signout").hidden = true;
  $("login").hidden = false;
  $("error").textContent = message || "";
}

function start() {
  $("board").hidden = false;
  $("signout").hidden = false;
  $("login").hidden = true;
  refresh().catch(() => {});
}

document.addEventListener("DOMContentLoaded", () => {
  translate();
  $("from").value = day(-29);
  $("to").value = day(0);
  $("lang").addEventListener("click", () => {
    language = language === "zh" ? "en" : "zh";
    localStorage.setItem("ehr.lang", language);
    translate();
    if (recognition) drawRecognition();
    if (operations) drawOperations();
  });
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("ehr.token", $("token").value.trim());
    $("token").value = "";
    start();
  });
  $("period").addEventListener("submit", (event) => {
    event.preventDefault();
    document.body.dataset.ready = "";
    refresh().catch(() => {});
  });
  $("signout").addEventListener("click", () => signOut());
  setInterval(() => { if (sessionStorage.getItem("ehr.token")) loadOperations().catch(() => {}); },
              10000);
  if (sessionStorage.getItem("ehr.token")) start();
});

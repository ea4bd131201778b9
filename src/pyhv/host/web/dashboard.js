// The pyhv host dashboard (docs/dashboard.md): the VMs of one daemon, their live
// figures and their serial consoles, all through the daemon's REST API (docs/host-daemon.md)
// and its console WebSocket. No framework, no chart library: the graphs are canvases.
"use strict";

const TOKEN_KEY = "pyhv-token";   // sessionStorage: this tab only, gone when it closes
const POLL_MS = 1000;             // as `pyhv top`
const HISTORY = 120;              // samples kept per VM (two minutes)
const CONSOLE_PROTOCOL = "pyhv-console";
const TOKEN_PROTOCOL_PREFIX = "pyhv-token.";

let token = sessionStorage.getItem(TOKEN_KEY);
let hostInfo = null;
let selected = null;              // the VM whose graphs are shown
let pollTimer = null;
const figures = new Map();        // VM name -> [{t, cpu, mips, disk, net, cons, raw}]
const $ = (id) => document.getElementById(id);

class AuthError extends Error {}

// ----------------------------------------------------------------------- the REST API

async function api(method, path, body) {
  const headers = {};
  if (token) headers.Authorization = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const reply = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (reply.status === 401) throw new AuthError("missing or wrong API token");
  const data = reply.status === 204 ? null : await reply.json().catch(() => null);
  if (!reply.ok) throw new Error((data && data.error) || `${reply.status} ${reply.statusText}`);
  return data;
}

// ----------------------------------------------------------------------- signing in

function showLogin(message) {
  stopPolling();
  $("main").hidden = true;
  $("sign-out").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

async function signIn() {
  try {
    hostInfo = await api("GET", "/v1/host");
  } catch (e) {
    if (e instanceof AuthError) {
      showLogin(token ? "That token is not this daemon's." : "");
      return;
    }
    showLogin("The daemon does not answer: " + e.message);
    return;
  }
  $("login").hidden = true;
  $("main").hidden = false;
  $("sign-out").hidden = !token;
  const h = hostInfo;
  $("host-info").textContent =
    `version ${h.version} · ${h.cpus} CPUs · policy ${h.policy} (${h.cpu_backend}) · ` +
    `state ${h.state_dir}`;
  await poll();
  const wanted = new URLSearchParams(location.hash.slice(1)).get("console");
  if (wanted) openConsole(wanted);
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  signIn();
});

$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  closeConsole();
  showLogin("");
});

// ----------------------------------------------------------------------- the VM table

function stopPolling() {
  if (pollTimer !== null) clearTimeout(pollTimer);
  pollTimer = null;
}

let polling = false;  // one request at a time: a button's poll() joins the loop

async function poll() {
  if (polling) return;
  polling = true;
  stopPolling();
  try {
    const metrics = await api("GET", "/v1/metrics");
    record(metrics);
    render(metrics);
  } catch (e) {
    if (e instanceof AuthError) { showLogin("The token was refused."); return; }
    say("Cannot read the figures: " + e.message, "poll");
  } finally {
    polling = false;
  }
  pollTimer = setTimeout(poll, POLL_MS);
}

function record(metrics) {
  const now = performance.now() / 1000;
  for (const vm of metrics.vms) {
    const samples = figures.get(vm.name) || [];
    if (vm.pid == null) { figures.set(vm.name, []); continue; }
    const last = samples[samples.length - 1];
    const raw = {
      disk: (vm.disk_read || 0) + (vm.disk_write || 0),
      net: (vm.net_tx || 0) + (vm.net_rx || 0),
      cons: (vm.console_out || 0) + (vm.console_in || 0),
    };
    const rate = (key) => {
      if (!last || last.raw[key] > raw[key]) return 0;  // first sample, or a restart
      return (raw[key] - last.raw[key]) / Math.max(now - last.t, 0.001);
    };
    samples.push({ t: now, cpu: vm.cpu_pct || 0, mips: vm.mips || 0,
                   disk: rate("disk"), net: rate("net"), cons: rate("cons"), raw });
    while (samples.length > HISTORY) samples.shift();
    figures.set(vm.name, samples);
  }
}

const ACTIONS = {  // which buttons a VM in each state shows
  stopped: ["start"], crashed: ["start"], starting: [], stopping: [],
  running: ["console", "pause", "reboot", "stop", "snapshot"],
  paused: ["console", "resume", "stop", "snapshot"],
};

function fmtSize(bytes) {
  if (bytes == null) return "-";
  const units = ["B", "K", "M", "G", "T"];
  let v = Number(bytes), i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 || v >= 100 ? v.toFixed(0) : v.toFixed(1)) + (i ? units[i] : "");
}

function fmtDuration(s) {
  if (s == null) return "-";
  s = Math.floor(s);
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor(s % 3600 / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function render(metrics) {
  const h = metrics.host;
  if ($("status").dataset.kind === "poll") say("");
  $("host-info").textContent = `${h.cpus} CPUs · policy ${h.policy} · ${h.vms_running} ` +
    `running · VMs ${h.cpu_pct.toFixed(1)}% CPU · daemon ${h.daemon_cpu_pct.toFixed(1)}%` +
    (hostInfo ? ` · pyhv ${hostInfo.version}` : "");
  const body = $("vms").tBodies[0];
  const rows = new Map([...body.rows].map((r) => [r.dataset.vm, r]));
  $("no-vms").hidden = metrics.vms.length > 0;
  metrics.vms.forEach((vm, index) => {
    let row = rows.get(vm.name);
    rows.delete(vm.name);
    if (!row) {
      row = body.insertRow();
      row.dataset.vm = vm.name;
      for (let i = 0; i < 12; i++) row.insertCell();
      row.cells[0].className = "name";
      row.cells[0].addEventListener("click", () => select(vm.name));
      row.cells[11].className = "actions";
    }
    if (body.rows[index] !== row) body.insertBefore(row, body.rows[index] || null);
    const running = vm.pid != null;
    const cells = [
      vm.name, vm.state, String(vm.vcpus ?? "-"), fmtSize(vm.memory), String(vm.shares ?? "-"),
      vm.reservation ? `${vm.reservation}%` : "-", vm.limit == null ? "-" : `${vm.limit}%`,
      running ? (vm.engine || "-") : "-",
      running && vm.cpu_pct != null ? vm.cpu_pct.toFixed(1) : "-",
      running && vm.mips != null ? vm.mips.toFixed(2) : "-",
      running ? fmtDuration(vm.uptime) : "-",
    ];
    cells.forEach((text, i) => { if (row.cells[i].textContent !== text) row.cells[i].textContent = text; });
    row.cells[1].className = "state " + vm.state;
    row.dataset.state = vm.state;
    row.classList.toggle("selected", vm.name === selected);
    const wanted = (ACTIONS[vm.state] || []).join(",");
    const actions = row.cells[11];
    if (actions.dataset.actions !== wanted) {
      actions.dataset.actions = wanted;
      actions.replaceChildren(...(ACTIONS[vm.state] || []).map((action) => {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = action;
        button.dataset.action = action;
        button.addEventListener("click", () => act(vm.name, action, button));
        return button;
      }));
    }
  });
  for (const row of rows.values()) row.remove();  // VMs no longer defined
  if (selected !== null && !metrics.vms.some((vm) => vm.name === selected)) {
    selected = null;
    $("graphs").hidden = true;
  }
  if (selected === null && metrics.vms.length) select(metrics.vms[0].name);
  else drawGraphs();
}

function say(text, kind) {  // one line above the table: an action's outcome, or an error
  $("status").textContent = text;
  $("status").dataset.kind = kind || "";
}

async function act(name, action, button) {
  if (action === "console") { openConsole(name); return; }
  let body;
  if (action === "snapshot") {
    const fallback = hostInfo ? `${hostInfo.state_dir}/vms/${name}/${name}.snap` : "";
    const path = prompt(`Save VM '${name}' to the snapshot file (an absolute path on the ` +
                        "daemon's host):", fallback);
    if (!path) return;
    body = { path };
  }
  button.disabled = true;
  say(`${action} ${name}...`);
  try {
    const result = await api("POST", `/v1/vms/${encodeURIComponent(name)}/${action}`, body);
    say(action === "snapshot"
      ? `Saved '${name}' to ${result.path} (${fmtSize(result.file_bytes)} on disk, ` +
        `${result.seconds.toFixed(2)} s).` : "");
    if (action === "start") select(name);
  } catch (e) {
    if (e instanceof AuthError) { showLogin("The token was refused."); return; }
    say(`${action} ${name}: ${e.message}`);
  } finally {
    button.disabled = false;
  }
  poll();
}

// ----------------------------------------------------------------------- graphs

function select(name) {
  selected = name;
  for (const row of $("vms").tBodies[0].rows) row.classList.toggle("selected", row.dataset.vm === name);
  $("graphs").hidden = false;
  $("graph-title").textContent = `${name}: the last two minutes`;
  drawGraphs();
}

function niceMax(value) {  // 1, 2, 5 x 10^n at or above value
  if (value <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(value)));
  for (const m of [1, 2, 5, 10]) if (m * p >= value) return m * p;
  return 10 * p;
}

function drawGraph(canvas, samples, series, fixedMax) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, top = 12, bottom = h - 2;
  ctx.clearRect(0, 0, w, h);
  const peak = Math.max(0, ...samples.flatMap((s) => series.map(([key]) => s[key])));
  const max = fixedMax !== undefined ? Math.max(fixedMax, niceMax(peak)) : niceMax(peak);
  ctx.strokeStyle = "#e3e7eb";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = Math.round(top + (bottom - top) * i / 4) + 0.5;
    ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke();
  }
  ctx.fillStyle = "#6b7580";
  ctx.font = "10px sans-serif";
  ctx.fillText(fmtSize(max).replace(/^(\d+)$/, "$1"), 2, 10);
  const step = w / (HISTORY - 1);
  const x0 = w - step * (samples.length - 1);
  for (const [key, color] of series) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    samples.forEach((s, i) => {
      const x = x0 + i * step, y = bottom - (bottom - top) * Math.min(s[key] / max, 1);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

function drawGraphs() {
  if (selected === null) return;
  const samples = figures.get(selected) || [];
  const last = samples[samples.length - 1];
  drawGraph($("cpu-graph"), samples, [["cpu", "#1f6feb"]], 100);
  drawGraph($("mips-graph"), samples, [["mips", "#7a3fd1"]]);
  drawGraph($("io-graph"), samples, [["disk", "#1f6feb"], ["net", "#16794c"], ["cons", "#b35c00"]]);
  $("cpu-now").textContent = last ? last.cpu.toFixed(1) : "(not running)";
  $("mips-now").textContent = last ? last.mips.toFixed(2) : "";
  $("io-now").textContent = last
    ? `${fmtSize(last.disk)}/s · ${last.net.toFixed(0)}/s · ${fmtSize(last.cons)}/s` : "";
}

// ----------------------------------------------------------------------- the console

let terminal = null;    // one xterm.js Terminal, reused
let socket = null;      // the console WebSocket
let consoleName = null;
let xtermLoading = null;

function loadXterm() {  // xterm.js is installed by scripts/setup.sh, not shipped in git
  if (!xtermLoading) {
    xtermLoading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "vendor/xterm.js";
      script.onload = () => resolve(window.Terminal);
      script.onerror = async () => {
        const reply = await fetch("vendor/xterm.js").catch(() => null);
        const data = reply ? await reply.json().catch(() => null) : null;
        reject(new Error((data && data.error) || "xterm.js is not installed: run scripts/setup.sh"));
      };
      document.head.appendChild(script);
    });
  }
  return xtermLoading;
}

function b64url(text) {
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function openConsole(name) {
  closeConsole();
  consoleName = name;
  $("console").hidden = false;
  $("console-title").textContent = `Console of ${name}`;
  history.replaceState(null, "", "#console=" + encodeURIComponent(name));
  let Terminal;
  try {
    Terminal = await loadXterm();
  } catch (e) {
    $("xterm-missing").hidden = false;
    $("xterm-missing").textContent = e.message;
    $("console-status").textContent = "";
    return;
  }
  if (!terminal) {
    terminal = new Terminal({ cols: 100, rows: 24, convertEol: false, scrollback: 2000,
                              fontFamily: "DejaVu Sans Mono, monospace", fontSize: 14,
                              lineHeight: 1.2 });
    terminal.open($("terminal"));
    terminal.onData((data) => {
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(new TextEncoder().encode(data));
    });
  }
  terminal.reset();
  const protocols = [CONSOLE_PROTOCOL];
  if (token) protocols.push(TOKEN_PROTOCOL_PREFIX + b64url(token));
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/v1/vms/${encodeURIComponent(name)}/console`,
                           protocols);
  ws.binaryType = "arraybuffer";
  socket = ws;
  $("console-status").textContent = "connecting...";
  ws.onopen = () => {
    if (socket !== ws) return;
    $("console-status").textContent = "connected: type in the console below";
    terminal.focus();
  };
  ws.onmessage = (event) => {
    if (socket !== ws) return;
    terminal.write(typeof event.data === "string" ? event.data : new Uint8Array(event.data));
  };
  ws.onclose = (event) => {
    if (socket !== ws) return;
    socket = null;
    const why = event.reason || (event.code === 1006 ? "refused or cut (wrong token?)" : "");
    $("console-status").textContent = `disconnected (${event.code}${why ? ": " + why : ""})`;
  };
}

function closeConsole() {
  if (socket) { const ws = socket; socket = null; ws.close(1000, "viewer closed"); }
  consoleName = null;
  $("console").hidden = true;
  $("xterm-missing").hidden = true;
  if (location.hash) history.replaceState(null, "", location.pathname);
}

$("console-close").addEventListener("click", closeConsole);

// What the console shows, as text (for scripts and tests driving the page).
window.dashboard = {
  consoleText() {
    if (!terminal) return "";
    const buffer = terminal.buffer.active, lines = [];
    for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i).translateToString(true));
    return lines.join("\n");
  },
  get consoleName() { return consoleName; },
};

signIn();

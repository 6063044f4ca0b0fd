// The status page: polls /api/v1/status and shows it. Every value goes through textContent;
// state-changing requests carry the session's CSRF token. Nothing is fetched from elsewhere.
"use strict";
(function () {
  const POLL_MS = 5000;
  const HANDSHAKE_ALARM_SECS = 180;
  const EXPIRY_WARNING_DAYS = 30;
  let csrf = null;
  let last = null;
  let pendingDeadline = null;
  let offset = 0; // box clock minus browser clock, seconds

  const t = (key) => window.renkeiI18n.t(key);
  const $ = (id) => document.getElementById(id);
  function set(id, value) {
    const el = $(id);
    if (el) el.textContent = value === null || value === undefined || value === "" ? "-" : String(value);
  }
  function bytes(n) {
    if (typeof n !== "number") return "-";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return (i === 0 ? String(v) : v.toFixed(1)) + " " + units[i];
  }
  function when(unix) {
    if (typeof unix !== "number") return "-";
    return new Date(unix * 1000).toLocaleString(window.renkeiI18n.lang() === "ja" ? "ja-JP" : "en-GB");
  }
  function duration(secs) {
    const d = Math.floor(secs / 86400);
    const h = Math.floor((secs % 86400) / 3600);
    const m = Math.floor((secs % 3600) / 60);
    return (d ? d + "d " : "") + h + "h " + m + "m";
  }
  function row(tbody, cells, cls) {
    const tr = document.createElement("tr");
    if (cls) tr.className = cls;
    cells.forEach(function (c) {
      const td = document.createElement("td");
      td.textContent = c === null || c === undefined ? "-" : String(c);
      tr.appendChild(td);
    });
    tbody.appendChild(tr);
    return tr;
  }
  function table(id) {
    const tbody = document.querySelector("#" + id + " tbody");
    tbody.textContent = "";
    return tbody;
  }

  function render(doc) {
    last = doc;
    set("facility", doc.facility);
    const role = $("role");
    role.dataset.role = doc.role;
    role.textContent = t("role_" + doc.role);
    set("updated", new Date().toLocaleTimeString());
    document.title = "renkei — " + doc.facility;

    const tunnel = doc.tunnel;
    const state = $("tunnel-state");
    state.dataset.state = tunnel.state;
    state.textContent = t("state_" + tunnel.state);
    const peer = (tunnel.peers && tunnel.peers[0]) || {};
    set("tunnel-reason", peer.reason);
    set("tunnel-policy", t("policy_" + tunnel.policy));
    const age = peer.last_handshake_age_secs;
    const ageEl = $("handshake-age");
    ageEl.textContent = typeof age === "number" ? age + " " + t("seconds_ago") : t("never");
    const stale = tunnel.policy === "always_on" && (tunnel.alarm || (typeof age === "number" && age > HANDSHAKE_ALARM_SECS));
    ageEl.classList.toggle("alarm-text", stale);
    $("alarm").hidden = !stale;
    set("endpoint", peer.endpoint);
    const rx = (tunnel.peers || []).reduce((a, p) => a + p.rx_bytes, 0);
    const tx = (tunnel.peers || []).reduce((a, p) => a + p.tx_bytes, 0);
    set("rx-bytes", bytes(rx));
    set("tx-bytes", bytes(tx));
    $("tunnel-actions").hidden = doc.role !== "viewing";

    const c = doc.config || {};
    set("config-version", c.version);
    set("config-description", c.description);
    set("config-signer", c.signer || t("local_file"));
    set("config-applied", when(c.applied_at_unix));
    offset = doc.time_unix - Math.floor(Date.now() / 1000);
    pendingDeadline = c.pending ? c.pending.confirm_deadline_unix : null;
    $("pending").hidden = !c.pending;
    if (c.pending) set("pending-version", c.pending.version);
    tick();
    set("clock", doc.clock_synchronized === true ? t("clock_ok") : doc.clock_synchronized === false ? t("clock_bad") : t("clock_unknown"));
    $("clock").classList.toggle("warning-text", doc.clock_synchronized === false);
    set("uptime", duration(doc.uptime_secs));

    const services = table("services");
    const list = (doc.proxy && doc.proxy.services) || [];
    if (list.length === 0) row(services, [t("no_services")]);
    list.forEach(function (s) {
      row(services, [s.name, s.direction, s.active >= s.max_connections ? "full" : "listening",
        s.active + " / " + s.max_connections, s.total, s.refused, bytes(s.bytes_in), bytes(s.bytes_out), s.last_error],
        s.last_error ? "has-error" : "");
    });

    const certs = table("certificates");
    (doc.certificates || []).forEach(function (cert) {
      const warn = cert.warning || cert.days_left <= EXPIRY_WARNING_DAYS;
      const tr = row(certs, [cert.subject, cert.role, when(cert.not_after_unix), cert.days_left], warn ? "warning-row" : "");
      if (warn) tr.lastChild.textContent += " (" + t("renew_soon") + ")";
    });

    const e = doc.enrolment || {};
    set("wg-public-key", e.wireguard_public_key);
    set("csr-sha256", e.csr_sha256 || t("none"));
    set("page-certificate", doc.status_page && doc.status_page.certificate_sha256);

    const events = table("events");
    (doc.events || []).slice().reverse().forEach(function (ev) {
      row(events, [when(ev.time_unix), ev.level, ev.kind, ev.message], "level-" + ev.level);
    });
    const access = table("access-log");
    ((doc.proxy && doc.proxy.recent_connections) || []).slice().reverse().forEach(function (r) {
      row(access, [r.time, r.service, r.peer_addr, r.peer_identity, r.bytes_in, r.bytes_out, r.result],
        r.result === "ok" ? "" : "has-error");
    });
  }

  function tick() {
    if (pendingDeadline === null) return;
    const now = Math.floor(Date.now() / 1000) + offset;
    set("pending-countdown", Math.max(0, pendingDeadline - now));
  }

  async function poll() {
    try {
      const response = await fetch("/api/v1/status", { cache: "no-store", credentials: "same-origin" });
      if (response.status === 401) { window.location.assign("/login"); return; }
      if (response.ok) render(await response.json());
    } catch (e) {
      // The box may be restarting; the next poll tries again.
    }
  }

  async function session() {
    const response = await fetch("/api/v1/session", { cache: "no-store", credentials: "same-origin" });
    if (response.status === 401) { window.location.assign("/login"); return; }
    if (response.ok) csrf = (await response.json()).csrf_token;
  }

  async function post(path) {
    if (!csrf) await session();
    return fetch(path, { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf || "" } });
  }

  async function action(path) {
    const result = $("action-result");
    result.textContent = "…";
    try {
      const response = await post(path);
      result.textContent = response.ok ? "OK" : t("action_failed");
    } catch (e) {
      result.textContent = t("action_failed");
    }
    poll();
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("connect-now").addEventListener("click", function () { action("/api/v1/tunnel/connect"); });
    $("disconnect").addEventListener("click", function () { action("/api/v1/tunnel/disconnect"); });
    $("logout").addEventListener("click", async function () {
      await post("/logout");
      window.location.assign("/login");
    });
    document.addEventListener("renkei-lang", function () { if (last) render(last); });
    session().catch(function () {});
    poll();
    window.setInterval(poll, POLL_MS);
    window.setInterval(tick, 1000);
  });
})();

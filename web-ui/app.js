// The status page: polls /api/v1/status (summarised) and shows it. Every value goes through textContent;
// state-changing requests carry the session's CSRF token. Nothing is fetched from elsewhere.
"use strict";
(function () {
  const POLL_MS = 5000;
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
  // Dates and times in the page's language, not the browser's.
  function locale() {
    return window.renkeiI18n.lang() === "ja" ? "ja-JP" : "en-GB";
  }
  function when(unix) {
    if (typeof unix !== "number") return "-";
    return new Date(unix * 1000).toLocaleString(locale());
  }
  function duration(secs) {
    const d = Math.floor(secs / 86400);
    const h = Math.floor((secs % 86400) / 3600);
    const m = Math.floor((secs % 3600) / 60);
    return (d ? d + t("unit_days") + " " : "") + h + t("unit_hours") + " " + m + t("unit_minutes");
  }
  // A server value shown through its translation ("level_info"), or as it is when unknown.
  function word(prefix, value) {
    if (value === null || value === undefined) return "-";
    const key = prefix + value;
    const text = t(key);
    return text === key ? String(value) : text;
  }
  // The name renkei gives the one link of a closed network or an IPsec carrier (the daemon's
  // carrier LINK_NAME; a WireGuard peer's name is the config's): shown in the page's language.
  const CARRIER_LINK_NAME = "data centre";
  function linkName(name) {
    return name === CARRIER_LINK_NAME ? t("link_name_data_centre") : name;
  }
  // A parameter's word that several codes share one translation of (Code::catalogue_key in
  // the daemon names the same keys): every config event's reason, a summary's kind.
  function sharedWordKey(code, name, word) {
    // The carrier's own link name (carrier/mod.rs's test checks this key and the name).
    if (name === "peer" && word === CARRIER_LINK_NAME) return "link_name_data_centre";
    if (code.startsWith("config_") && name === "reason") return "config_reason_" + word;
    if (code.startsWith("tunnel_") && code !== "tunnel_connect_failed" && name === "reason") return "link_reason_" + word;
    if (code === "management_tls_refused" && name === "reason") return "tls_reason_" + word;
    if (code === "events_suppressed" && name === "kind") return "kind_" + word;
    return null;
  }
  // An event in the page's language from its code and parameters (templates in i18n.js:
  // {name} is a parameter, [ ... ] appears only when its parameters are set); the server's
  // English message when the page has no template for the code.
  function eventText(ev) {
    const key = "event_" + ev.code;
    const template = t(key);
    if (typeof ev.code !== "string" || template === key) return ev.message;
    const params = ev.params || {};
    const present = (name) => params[name] !== null && params[name] !== undefined && params[name] !== "";
    const value = function (name) {
      if (!present(name)) return t("unknown");
      const keys = [key + "_" + name + "_" + params[name], sharedWordKey(ev.code, name, params[name])];
      for (const translated of keys) {
        if (translated !== null && t(translated) !== translated) return t(translated);
      }
      return String(params[name]);
    };
    const fill = (text) => text.replace(/\{([a-z_]+)\}/g, (_, name) => value(name));
    // One pass over the template, so nothing in a parameter's value is read as a placeholder.
    return template.replace(/\[([^\]]*)\]|\{([a-z_]+)\}/g, function (_, part, name) {
      if (name !== undefined) return value(name);
      const names = Array.from(part.matchAll(/\{([a-z_]+)\}/g), (m) => m[1]);
      return names.every(present) ? fill(part) : "";
    });
  }
  // How a carrier's own fields read, by the field's last name: unix times as dates, byte
  // counters in binary units, and the fields that are a warning when set (a terminated SA, an
  // error talking to the carrier's daemon). Only the backend rendering names such fields.
  const TIME_FIELDS = ["established", "installed", "last_in", "last_out"];
  const BYTE_FIELDS = ["bytes_in", "bytes_out"];
  const WARNING_FIELDS = ["profile_violation_names", "last_error_code"];
  // Fields whose values are stable words, and the catalogue prefix that translates them.
  const WORD_FIELDS = { last_error_code: "ipsec_problem_" };
  // English descriptions for logs and tools that another field says on the page
  // (`offloads_on` for `offloads`, `last_error_code` for `last_error`, charon's names of the
  // algorithms in `profile_violation_names` for `profile_violation`).
  const ENGLISH_FIELDS = ["offloads", "last_error", "profile_violation"];
  // A carrier's own fields as [label, text, field, warning] rows: nested objects (drop counts,
  // security associations) are flattened as "object.field" (a missing one is one row, "-"),
  // lists joined, booleans translated.
  function fields(part, prefix) {
    const out = [];
    Object.keys(part || {}).forEach(function (key) {
      if (ENGLISH_FIELDS.includes(key)) return;
      const value = part[key];
      const name = prefix ? prefix + "." + key : key;
      if (value !== null && typeof value === "object" && !Array.isArray(value)) {
        fields(value, name).forEach((f) => out.push(f));
        return;
      }
      const labelKey = "backend_" + name.split(".").join("_");
      const label = t(labelKey);
      const present = value !== null && value !== undefined && value !== "";
      const text = !present ? "-"
        : Array.isArray(value) ? value.map((v) => (v !== null && typeof v === "object" ? JSON.stringify(v) : String(v))).join(", ")
        : typeof value === "boolean" ? t(value ? "yes" : "no")
        : WORD_FIELDS[key] ? word(WORD_FIELDS[key], value)
        : TIME_FIELDS.includes(key) ? when(value)
        : BYTE_FIELDS.includes(key) ? bytes(value)
        : String(value);
      out.push([label === labelKey ? name : label, text, name, present && WARNING_FIELDS.includes(key)]);
    });
    return out;
  }
  // Why a connection was refused or failed, from its stable word (and a failed handshake's
  // reason); the English RESULT is the journal's and the JSON API's.
  function problemText(problem) {
    if (!problem) return null;
    const text = word("problem_", problem.code);
    return problem.tls_reason ? text + ": " + word("tls_reason_", problem.tls_reason) : text;
  }
  // Whether the data centre is reachable, from the generic state and alarm.
  function reachability(tunnel) {
    if (tunnel.alarm === true) return t("reach_alarm");
    if (tunnel.state === "up") return t("reach_up");
    if (tunnel.state === "idle") return t("reach_idle");
    return t("reach_down");
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

  // A facility's primary and backup hubs (AVL-4): the card is shown only when the box has a
  // hub group.
  function renderHubs(hubs) {
    $("hubs-card").hidden = !hubs;
    if (!hubs) return;
    set("hubs-active", hubs.active);
    set("hubs-preferred", hubs.preferred || t("hubs_no_preference"));
    set("hubs-failovers", hubs.failovers);
    const rows = table("hubs");
    (hubs.members || []).forEach(function (m) {
      const heard = typeof m.last_heard_age_secs === "number" ? m.last_heard_age_secs + " " + t("seconds_ago") : t("never");
      const tr = row(rows, [m.name + (m.preferred ? " ★" : ""), t(m.active ? "hubs_role_active" : "hubs_role_standby"),
        t(m.healthy ? "hubs_healthy" : "hubs_not_answering"), heard], m.active && !m.healthy ? "alarm-row" : "");
      tr.dataset.hub = m.name;
      tr.dataset.active = String(m.active === true);
      tr.dataset.healthy = String(m.healthy === true);
    });
  }

  function render(doc) {
    last = doc;
    set("facility", doc.facility);
    const role = $("role");
    role.dataset.role = doc.role;
    role.textContent = t("role_" + doc.role);
    set("updated", new Date().toLocaleTimeString(locale()));
    document.title = "renkei — " + doc.facility;

    const tunnel = doc.tunnel;
    const peers = tunnel.peers || [];
    // Generic fields are every carrier's; a carrier's own fields sit in the backend parts under
    // its kind and are listed as they come, labelled from i18n.js ("backend_<field>"): the page
    // names no field of one carrier.
    const own = (part) => (part && part[tunnel.kind]) || {};
    const state = $("tunnel-state");
    state.dataset.state = tunnel.state;
    state.textContent = t("state_" + tunnel.state);
    const kind = $("carrier-kind");
    kind.dataset.kind = tunnel.kind;
    kind.textContent = word("carrier_", tunnel.kind);
    set("reachability", reachability(tunnel));
    // The card shows the peer in alarm if there is one, else the active hub of a hub group, else
    // the first (a facility box has one).
    const activeHub = doc.hubs ? peers.find((p) => p.name === doc.hubs.active) : null;
    const peer = peers.find((p) => p.alarm) || activeHub || peers[0] || {};
    set("tunnel-peer", peer.name === undefined ? undefined : linkName(peer.name));
    // The carrier's stable word, translated (its English `reason` is for logs and tools).
    set("tunnel-reason", peer.reason_code ? word("link_reason_", peer.reason_code) : null);
    set("tunnel-policy", t("policy_" + tunnel.policy));
    const age = peer.last_reached_age_secs;
    const ageEl = $("handshake-age");
    ageEl.textContent = typeof age === "number" ? age + " " + t("seconds_ago") : t("never");
    // The server decides the alarm (the running config's threshold).
    ageEl.classList.toggle("alarm-text", peer.alarm === true);
    $("alarm").hidden = tunnel.alarm !== true;
    // A hub's summarised document lists at most a few peers in alarm; peer_totals counts all.
    const totals = doc.peer_totals || null;
    const alarmNames = peers.filter((p) => p.alarm).map((p) => p.name);
    const moreInAlarm = totals ? totals.in_alarm - alarmNames.length : 0;
    set("alarm-peers", alarmNames.join(", ") + (moreInAlarm > 0 ? " +" + moreInAlarm : ""));
    $("forwarding-warning").hidden = own(tunnel.backend).ip_forward !== true;
    const rx = totals ? totals.rx_bytes : peers.reduce((a, p) => a + p.rx_bytes, 0);
    const tx = totals ? totals.tx_bytes : peers.reduce((a, p) => a + p.tx_bytes, 0);
    set("rx-bytes", bytes(rx));
    set("tx-bytes", bytes(tx));
    $("tunnel-actions").hidden = doc.tunnel_actions !== true;
    const backend = $("backend");
    backend.textContent = "";
    fields(own(tunnel.backend)).concat(fields(own(peer.backend))).forEach(function (f) {
      const dt = document.createElement("dt");
      dt.textContent = f[0];
      const dd = document.createElement("dd");
      dd.textContent = f[1];
      dd.dataset.field = f[2];
      if (f[3]) {
        dd.dataset.warning = "true";
        dd.classList.add("warning-text");
        dt.classList.add("warning-text");
      }
      backend.appendChild(dt);
      backend.appendChild(dd);
    });

    // A hub's facilities have their own paged table (below); the peers table is a facility
    // box's, with its one or two links.
    const hub = doc.role === "hub";
    $("facilities-card").hidden = !hub;
    $("peers-card").hidden = hub;
    const peerRows = table("peers");
    (hub ? [] : peers).forEach(function (p) {
      const details = fields(own(p.backend)).map((f) => f[0] + ": " + f[1]).join("; ");
      const tr = row(peerRows, [linkName(p.name), t("state_" + p.state),
        typeof p.last_reached_age_secs === "number" ? p.last_reached_age_secs + " " + t("seconds_ago") : t("never"),
        details, bytes(p.rx_bytes), bytes(p.tx_bytes)], p.alarm ? "alarm-row" : "");
      tr.dataset.peer = p.name;
      tr.dataset.alarm = String(p.alarm === true);
    });

    renderHubs(doc.hubs);

    const c = doc.config || {};
    const pushed = typeof c.signer === "string";
    set("config-version", c.version);
    set("config-description", c.description);
    set("config-pushed-by", pushed ? c.pushed_by : t("local_file"));
    set("config-pushed-at", pushed ? when(c.pushed_at_unix) : null);
    set("config-signer", c.signer);
    set("config-applied", when(c.applied_at_unix));
    offset = doc.time_unix - Math.floor(Date.now() / 1000);
    pendingDeadline = c.pending ? c.pending.confirm_deadline_unix : null;
    $("pending").hidden = !c.pending;
    if (c.pending) {
      set("pending-version", c.pending.version);
      set("pending-by", c.pushed_by);
    }
    tick();
    set("clock", doc.clock_synchronized === true ? t("clock_ok") : doc.clock_synchronized === false ? t("clock_bad") : t("clock_unknown"));
    $("clock").classList.toggle("warning-text", doc.clock_synchronized === false);
    set("uptime", duration(doc.uptime_secs));

    const services = table("services");
    const list = (doc.proxy && doc.proxy.services) || [];
    if (list.length === 0) row(services, [t("no_services")]);
    list.forEach(function (s) {
      const tr = row(services, [s.name, word("direction_", s.direction), word("service_state_", s.state),
        s.active + " / " + s.max_connections, s.total, s.refused, bytes(s.bytes_in), bytes(s.bytes_out), problemText(s.last_problem)],
        s.last_error ? "has-error" : "");
      tr.dataset.service = s.name;
      tr.dataset.state = s.state;
      tr.dataset.active = String(s.active);
      tr.dataset.bytesIn = String(s.bytes_in);
      tr.dataset.bytesOut = String(s.bytes_out);
    });

    const certs = table("certificates");
    (doc.certificates || []).forEach(function (cert) {
      const tr = row(certs, [cert.subject, word("cert_role_", cert.role), when(cert.not_after_unix), cert.days_left],
        cert.warning ? "warning-row" : "");
      tr.dataset.warning = String(cert.warning === true);
      if (cert.warning) tr.lastChild.textContent += " (" + t("renew_soon") + ")";
    });

    // The firmware and the last update's outcome: its word translated, then why (a refusal's
    // reason word, translated; the box's English message is for logs and tools).
    const fw = doc.firmware || {};
    set("firmware-version", fw.version);
    set("booted-slot", fw.booted_slot === "unknown" ? t("unknown") : fw.booted_slot);
    const lastUpdate = fw.last_result;
    const resultEl = $("update-result");
    resultEl.dataset.result = lastUpdate ? lastUpdate.result : "";
    resultEl.textContent = lastUpdate
      ? word("update_result_", lastUpdate.result) + (lastUpdate.version ? " (" + lastUpdate.version + ")" : "")
      : t("none");
    const failed = lastUpdate && ["refused", "install_failed", "failed_health_check", "fell_back", "interrupted"].indexOf(lastUpdate.result) >= 0;
    resultEl.classList.toggle("warning-text", failed === true);
    set("update-reason", lastUpdate && lastUpdate.reason ? word("event_update_refused_reason_", lastUpdate.reason) : null);

    const e = doc.enrolment || {};
    set("wg-public-key", e.wireguard_public_key);
    set("csr-sha256", e.csr_sha256 || t("none"));
    set("page-certificate", doc.status_page && doc.status_page.certificate_sha256);

    const events = table("events");
    (doc.events || []).slice().reverse().forEach(function (ev) {
      row(events, [when(ev.time_unix), word("level_", ev.level), word("kind_", ev.kind), eventText(ev)], "level-" + ev.level);
    });
    const access = table("access-log");
    ((doc.proxy && doc.proxy.recent_connections) || []).slice().reverse().forEach(function (r) {
      const ms = Date.parse(r.time);
      row(access, [isNaN(ms) ? r.time : new Date(ms).toLocaleString(locale()), r.service, r.peer_addr, r.peer_identity, r.bytes_in, r.bytes_out,
        r.problem ? problemText(r.problem) : t("access_ok")],
        r.result === "ok" ? "" : "has-error");
    });
  }

  // The hub's facilities table (AVL-6): one page at a time from /api/v1/facilities, searched
  // and sorted by the box; rows are kept by facility name and only their changed cells are
  // rewritten, so a poll does not rebuild the table.
  const facilityQuery = { offset: 0, limit: 50, q: "", sort: "state", order: "asc" };
  let lastFacilities = null;
  let facilityRequests = 0;
  let facilityRenders = 0;

  async function loadFacilities() {
    const request = ++facilityRequests;
    const params = new URLSearchParams({
      offset: String(facilityQuery.offset), limit: String(facilityQuery.limit),
      sort: facilityQuery.sort, order: facilityQuery.order,
    });
    if (facilityQuery.q) params.set("q", facilityQuery.q);
    try {
      const response = await fetch("/api/v1/facilities?" + params.toString(), { cache: "no-store", credentials: "same-origin" });
      if (response.status === 401) { window.location.assign("/login"); return; }
      if (!response.ok) return;
      const page = await response.json();
      // An answer to an older query (the administrator typed on) is not shown.
      if (request !== facilityRequests) return;
      renderFacilities(page);
    } catch (e) {
      // The next poll tries again.
    }
  }

  function renderFacilities(page) {
    lastFacilities = page;
    const c = page.counts || {};
    set("count-total", page.total);
    ["up", "idle", "connecting", "down", "alarm"].forEach((k) => set("count-" + k, c[k]));
    const shown = page.rows.length;
    $("facility-range").textContent = page.matched === 0 ? t("no_facilities")
      : (page.offset + 1) + "–" + (page.offset + shown) + " / " + page.matched;
    $("facility-prev").disabled = page.offset === 0;
    $("facility-next").disabled = page.offset + shown >= page.matched;
    $("facility-search").placeholder = t("facility_search_hint");
    const tbody = document.querySelector("#facilities tbody");
    const kept = new Map();
    Array.from(tbody.children).forEach(function (tr) {
      if (tr.dataset.facility) kept.set(tr.dataset.facility, tr);
      else tr.remove();
    });
    page.rows.forEach(function (r) {
      const age = r.last_reached_age_secs;
      const cells = [r.name, t("state_" + r.state),
        typeof age === "number" ? age + " " + t("seconds_ago") : t("never"),
        r.endpoint || "-", (r.addresses || []).join(", ") || "-",
        bytes(r.rx_bytes), bytes(r.tx_bytes), r.alarm ? t("facility_alarm_on") : "-"];
      let tr = kept.get(r.name);
      if (tr) {
        kept.delete(r.name);
      } else {
        tr = document.createElement("tr");
        tr.dataset.facility = r.name;
        cells.forEach(() => tr.appendChild(document.createElement("td")));
        tr.children[1].className = "state";
      }
      cells.forEach(function (text, i) {
        if (tr.children[i].textContent !== text) tr.children[i].textContent = text;
      });
      tr.children[1].dataset.state = r.state;
      tr.dataset.state = r.state;
      tr.dataset.alarm = String(r.alarm === true);
      tr.className = r.alarm ? "alarm-row" : "";
      tbody.appendChild(tr); // in page order; an existing row moves, it is not rebuilt
    });
    kept.forEach((tr) => tr.remove());
    if (shown === 0) row(tbody, [t("no_facilities")]);
    tbody.dataset.fetched = String(++facilityRenders);
  }

  function facilitiesFrom(offset) {
    facilityQuery.offset = Math.max(0, offset);
    loadFacilities();
  }

  function tick() {
    if (pendingDeadline === null) return;
    const now = Math.floor(Date.now() / 1000) + offset;
    set("pending-countdown", Math.max(0, pendingDeadline - now));
  }

  async function poll() {
    try {
      // The summary: every peer on a facility box, the few in alarm and totals on a hub
      // (whose facilities table pages through /api/v1/facilities).
      const response = await fetch("/api/v1/status?peers=summary", { cache: "no-store", credentials: "same-origin" });
      if (response.status === 401) { window.location.assign("/login"); return; }
      if (response.ok) render(await response.json());
      if (last && last.role === "hub") loadFacilities();
    } catch (e) {
      // The box may be restarting; the next poll tries again.
    }
  }

  async function session() {
    const response = await fetch("/api/v1/session", { cache: "no-store", credentials: "same-origin" });
    if (response.status === 401) { window.location.assign("/login"); return; }
    if (!response.ok) return;
    const data = await response.json();
    csrf = data.csrf_token;
    // Only a login without a second factor gets the warning (AUTH-3).
    $("second-factor-warning").hidden = !(data.second_factor && !data.second_factor.enrolled);
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
    document.addEventListener("renkei-lang", function () {
      if (last) render(last);
      if (lastFacilities) renderFacilities(lastFacilities);
    });
    let searchTimer = null;
    $("facility-search").addEventListener("input", function () {
      window.clearTimeout(searchTimer);
      searchTimer = window.setTimeout(function () {
        facilityQuery.q = $("facility-search").value.trim();
        facilitiesFrom(0);
      }, 250);
    });
    $("facility-sort").addEventListener("change", function () {
      facilityQuery.sort = $("facility-sort").value;
      facilitiesFrom(0);
    });
    $("facility-desc").addEventListener("change", function () {
      facilityQuery.order = $("facility-desc").checked ? "desc" : "asc";
      facilitiesFrom(0);
    });
    $("facility-prev").addEventListener("click", function () { facilitiesFrom(facilityQuery.offset - facilityQuery.limit); });
    $("facility-next").addEventListener("click", function () { facilitiesFrom(facilityQuery.offset + facilityQuery.limit); });
    session().catch(function () {});
    poll();
    window.setInterval(poll, POLL_MS);
    window.setInterval(tick, 1000);
  });
})();

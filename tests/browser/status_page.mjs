// Headless Chromium logs in to a renkei box's status page and reports what the page shows.
// Run inside a lab namespace by tests/tests/status_page.rs (ops3_browser_...):
//   node status_page.mjs <base-url> <user-data-dir> <screenshot.png> [options-json]
// (password on stdin). Options: {"service": {"name", "address", "port"}} opens a TCP
// connection to that service of the box and waits, without touching the page, for the page to
// show it open and then closed again (the page refreshes itself); {"countdown": true} waits for
// the pending-config countdown to tick; {"alarm": true} waits for the handshake alarm;
// {"facilities": {"search", "address"}} drives a hub's facilities table (search, paging, sort).
// Prints one JSON object. Uses Debian's /usr/bin/chromium through playwright-core; nothing is
// downloaded and the page may fetch nothing outside the box.
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";
import net from "node:net";

const [base, userDataDir, screenshot, optionsJson] = process.argv.slice(2);
const options = JSON.parse(optionsJson || "{}");
const password = readFileSync(0, "utf8").replace(/\r?\n$/, "");
const STEP_MS = 20000;
const result = { requests: [], console_errors: [], steps: [] };

// Polls `read` (page.evaluate, which the CSP allows, unlike waitForFunction) until `done`.
async function until(what, read, done, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error("timed out waiting for " + what + ": " + JSON.stringify(value));
    await new Promise((r) => setTimeout(r, 200));
  }
}

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  ignoreHTTPSErrors: true, // the box's self-signed certificate; the test checks its fingerprint separately
  viewport: { width: 1280, height: 1500 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(STEP_MS);
  page.on("request", (r) => result.requests.push(r.url()));
  page.on("console", (m) => { if (m.type() === "error") result.console_errors.push(m.text()); });
  page.on("pageerror", (e) => result.console_errors.push(String(e)));

  await page.goto(base + "/");
  result.first_url = page.url();
  await page.fill("#password", password);
  await Promise.all([page.waitForURL(base + "/"), page.click("#login")]);
  // Selectors, not waitForFunction: the page's CSP (rightly) forbids the eval that needs.
  await page.waitForSelector('#tunnel-state:not([data-state=""])');

  const read = () => page.evaluate(() => {
    const text = (id) => document.getElementById(id).textContent;
    const rows = (id) => Array.from(document.querySelectorAll("#" + id + " tbody tr"));
    const cells = (tr) => Array.from(tr.children).map((td) => td.textContent);
    return {
      lang: document.documentElement.lang,
      facility: text("facility"),
      role: document.getElementById("role").dataset.role,
      role_text: text("role"),
      updated: text("updated"),
      tunnel_state: document.getElementById("tunnel-state").dataset.state,
      tunnel_text: text("tunnel-state"),
      services: rows("services").length,
      service_rows: rows("services").filter((tr) => tr.dataset.service).map((tr) => ({
        name: tr.dataset.service, state: tr.dataset.state, active: tr.dataset.active,
        bytes_out: tr.dataset.bytesOut, cells: cells(tr),
      })),
      peer_rows: rows("peers").map((tr) => ({ name: tr.dataset.peer, alarm: tr.dataset.alarm, cls: tr.className, cells: cells(tr) })),
      certificate_rows: rows("certificates").map((tr) => ({ warning: tr.dataset.warning, cls: tr.className, cells: cells(tr) })),
      events: rows("events").length,
      event_levels: rows("events").map((tr) => tr.children[1].textContent),
      event_kinds: rows("events").map((tr) => tr.children[2].textContent),
      event_texts: rows("events").map((tr) => tr.children[3].textContent),
      event_times: rows("events").map((tr) => tr.children[0].textContent),
      tunnel_reason: text("tunnel-reason"),
      // What the administrator sees: the text of every visible element of the page.
      body_text: document.body.innerText,
      access_records: rows("access-log").length,
      wg_public_key: text("wg-public-key"),
      page_certificate: text("page-certificate"),
      actions_visible: !document.getElementById("tunnel-actions").hidden,
      connect_button_visible: document.getElementById("connect-now").offsetParent !== null,
      config_version: text("config-version"),
      config_description: text("config-description"),
      config_pushed_by: text("config-pushed-by"),
      config_pushed_at: text("config-pushed-at"),
      config_signer: text("config-signer"),
      pending_visible: !document.getElementById("pending").hidden,
      pending_version: text("pending-version"),
      pending_by: text("pending-by"),
      pending_countdown: text("pending-countdown"),
      alarm_visible: !document.getElementById("alarm").hidden,
      alarm_text: text("alarm"),
      alarm_background: getComputedStyle(document.getElementById("alarm")).backgroundColor,
      handshake_age_alarm: document.getElementById("handshake-age").classList.contains("alarm-text"),
      handshake_age_color: getComputedStyle(document.getElementById("handshake-age")).color,
      backend: Array.from(document.querySelectorAll("#backend dd")).map((dd) => ({
        field: dd.dataset.field, label: dd.previousElementSibling.textContent, text: dd.textContent,
        warning: dd.dataset.warning === "true",
      })),
      carrier_text: text("carrier-kind"),
      firmware_version: text("firmware-version"),
      booted_slot: text("booted-slot"),
      update_result: document.getElementById("update-result").dataset.result,
      update_result_text: text("update-result"),
      update_reason: text("update-reason"),
      hubs_visible: !document.getElementById("hubs-card").hidden,
      hub_rows: rows("hubs").map((tr) => ({ hub: tr.dataset.hub, active: tr.dataset.active, healthy: tr.dataset.healthy, cells: cells(tr) })),
      hubs_active: text("hubs-active"),
    };
  });
  result.initial = await read();

  if (options.service) {
    // The page refreshes itself: a connection opened from outside the browser shows up, then
    // goes away, with no click on the page in between.
    const { name, address, port } = options.service;
    const row = `#services tbody tr[data-service="${name}"]`;
    const socket = net.connect({ host: address, port });
    await new Promise((resolve, reject) => { socket.once("connect", resolve); socket.once("error", reject); });
    await page.waitForSelector(`${row}[data-active="1"]`);
    result.refresh = { open: await read() };
    socket.destroy();
    await page.waitForSelector(`${row}[data-active="0"]`);
    result.refresh.closed = await read();
  }
  if (options.countdown) {
    await page.waitForSelector("#pending:not([hidden])");
    const first = await read();
    const next = await until("the countdown to tick", read,
      (r) => r.pending_countdown !== first.pending_countdown, 10000);
    result.countdown = [first.pending_countdown, next.pending_countdown];
  }
  if (options.alarm) {
    await page.waitForSelector("#alarm:not([hidden])", { timeout: 60000 });
    result.alarm = await read();
  }

  if (options.facilities) {
    // The hub's facilities table: counts, one page, search, paging, sort; rows updated in
    // place by the page's own polling (a marked row survives a refresh).
    const readFacilities = () => page.evaluate(() => {
      const text = (id) => document.getElementById(id).textContent;
      const tbody = document.querySelector("#facilities tbody");
      return {
        visible: !document.getElementById("facilities-card").hidden,
        peers_table_visible: !document.getElementById("peers-card").hidden,
        fetched: Number(tbody.dataset.fetched),
        counts: Object.fromEntries(["total", "up", "idle", "connecting", "down", "alarm"].map((k) => [k, text("count-" + k)])),
        range: text("facility-range"),
        prev_disabled: document.getElementById("facility-prev").disabled,
        next_disabled: document.getElementById("facility-next").disabled,
        placeholder: document.getElementById("facility-search").placeholder,
        headers: Array.from(document.querySelectorAll("#facilities thead th")).map((th) => th.textContent),
        rows: Array.from(tbody.querySelectorAll("tr")).map((tr) => ({
          name: tr.dataset.facility, state: tr.dataset.state, alarm: tr.dataset.alarm,
          mark: tr.dataset.mark, cells: Array.from(tr.children).map((td) => td.textContent),
        })),
      };
    });
    await page.waitForSelector("#facilities-card:not([hidden])");
    const first = await until("the first facilities page", readFacilities, (r) => r.fetched > 0 && r.rows.length > 0, STEP_MS);
    const facilities = { first };
    // Mark one row, then wait for the page's next poll: the same element is still there.
    const marked = first.rows[1].name;
    await page.evaluate((name) => {
      document.querySelector(`#facilities tbody tr[data-facility="${name}"]`).dataset.mark = "kept";
    }, marked);
    facilities.refreshed = await until("a facilities refresh", readFacilities, (r) => r.fetched > first.fetched, STEP_MS);
    facilities.marked = marked;
    await page.fill("#facility-search", options.facilities.search);
    facilities.search = await until("the search", readFacilities,
      (r) => r.rows.length > 0 && r.rows.every((row) => row.name && row.name.includes(options.facilities.search)), STEP_MS);
    await page.fill("#facility-search", options.facilities.address);
    facilities.address = await until("the address search", readFacilities,
      (r) => r.rows.length > 0 && r.rows.every((row) => row.cells[4].includes(options.facilities.address)), STEP_MS);
    await page.fill("#facility-search", "");
    await until("all facilities again", readFacilities, (r) => r.range.endsWith(" / " + r.counts.total), STEP_MS);
    await page.click("#facility-next");
    facilities.page2 = await until("the second page", readFacilities, (r) => r.range.startsWith("51"), STEP_MS);
    await page.click("#facility-prev");
    await until("the first page again", readFacilities, (r) => r.range.startsWith("1–"), STEP_MS);
    // Every facility but one is idle, so a sort shows in which request was made and in the
    // reversed order: the test reads both.
    const before = (await readFacilities()).fetched;
    await page.selectOption("#facility-sort", "name");
    facilities.by_name = await until("the sort by name", readFacilities,
      (r) => r.fetched > before && r.rows.length > 1 && r.rows[0].name < r.rows[1].name, STEP_MS);
    await page.check("#facility-desc");
    facilities.by_name_desc = await until("the reversed sort", readFacilities,
      (r) => r.rows.length > 1 && r.rows[0].name > r.rows[1].name, STEP_MS);
    await page.click("[data-lang=en]");
    facilities.english = await readFacilities();
    await page.click("[data-lang=ja]");
    result.facilities = facilities;
  }

  const waitState = (state) => page.waitForSelector(`#tunnel-state[data-state="${state}"]`);
  if (result.initial.actions_visible) {
    await page.click("#disconnect");
    await waitState("idle");
    result.steps.push("disconnect->idle");
    await page.click("#connect-now");
    await waitState("up");
    result.steps.push("connect->up");
  }
  await page.click("[data-lang=en]");
  result.english = await read();
  await page.click("[data-lang=ja]");
  result.japanese = await read();
  await page.screenshot({ path: screenshot, fullPage: true });
  result.ok = true;
} catch (e) {
  result.ok = false;
  result.error = String(e && e.stack ? e.stack : e);
} finally {
  await context.close();
}
process.stdout.write(JSON.stringify(result) + "\n");

// Headless Chromium logs in to a renkei box's status page and reports what the page shows.
// Run inside a lab namespace by tests/tests/status_page.rs (ops3_browser_...):
//   node status_page.mjs <base-url> <user-data-dir> <screenshot.png>   (password on stdin)
// Prints one JSON object. Uses Debian's /usr/bin/chromium through playwright-core; nothing
// is downloaded and the page may fetch nothing outside the box.
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";

const [base, userDataDir, screenshot] = process.argv.slice(2);
const password = readFileSync(0, "utf8").replace(/\r?\n$/, "");
const STEP_MS = 20000;
const result = { requests: [], console_errors: [], steps: [] };

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

  const read = () => page.evaluate(() => ({
    lang: document.documentElement.lang,
    facility: document.getElementById("facility").textContent,
    role: document.getElementById("role").dataset.role,
    role_text: document.getElementById("role").textContent,
    tunnel_state: document.getElementById("tunnel-state").dataset.state,
    tunnel_text: document.getElementById("tunnel-state").textContent,
    services: document.querySelectorAll("#services tbody tr").length,
    events: document.querySelectorAll("#events tbody tr").length,
    access_records: document.querySelectorAll("#access-log tbody tr").length,
    wg_public_key: document.getElementById("wg-public-key").textContent,
    page_certificate: document.getElementById("page-certificate").textContent,
    actions_visible: !document.getElementById("tunnel-actions").hidden,
  }));
  result.initial = await read();

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

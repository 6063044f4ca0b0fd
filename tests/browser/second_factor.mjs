// Headless Chromium enrols and uses the status page's second factor (AUTH-3). Run inside a
// lab namespace by tests/tests/status_page.rs (auth3_browser_...):
//   node second_factor.mjs <base-url> <user-data-dir>   (password on stdin)
// The box requires a second factor and has none: the password leads to the enrolment page,
// the script reads the key shown there and computes codes itself (RFC 6238 with node's own
// HMAC-SHA-1, independent of the box), confirms, then logs in with password + code, and tries
// a replayed code, a wrong code and a recovery code twice. Prints one JSON object.
import { chromium } from "playwright-core";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";

const [base, userDataDir] = process.argv.slice(2);
const password = readFileSync(0, "utf8").replace(/\r?\n$/, "");
const STEP_MS = 20000;
const result = { requests: [], console_errors: [] };

function base32Decode(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of text.replace(/=+$/, "")) {
    const v = alphabet.indexOf(c);
    if (v < 0) throw new Error("not base32: " + c);
    bits += v.toString(2).padStart(5, "0");
  }
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}
// RFC 6238 / RFC 4226: HMAC-SHA-1 of the 8-byte big-endian step, dynamic truncation, 6 digits.
function totp(key, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac("sha1", key).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const value = (mac.readUInt32BE(offset) & 0x7fffffff) % 1000000;
  return String(value).padStart(6, "0");
}
const stepNow = () => Math.floor(Date.now() / 1000 / 30);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  ignoreHTTPSErrors: true,
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

  // Submits the login form; where the browser ends up and the error shown, if any.
  async function login(code) {
    await page.goto(base + "/login");
    await page.fill("#password", password);
    await page.fill("#code", code);
    await Promise.all([page.waitForNavigation(), page.click("#login")]);
    const error = await page.evaluate(() => {
      const el = document.getElementById("login-error");
      return el ? el.getAttribute("data-i18n") : null;
    });
    return { url: page.url(), error };
  }
  // Retries `attempt` while the box answers "wait" (the limiter's delay after a failure).
  async function pastDelay(attempt, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await attempt();
      if (r.error !== "login_wait") return r;
      if (Date.now() > deadline) throw new Error("still delayed: " + JSON.stringify(r));
      await sleep(250);
    }
  }
  async function logout() {
    await Promise.all([page.waitForURL(base + "/login"), page.click("#logout")]);
  }

  // 1. The password alone leads to the enrolment, and nothing else is reachable.
  result.first = await login("");
  result.api_status_while_enrolling = await page.evaluate(async () => (await fetch("/api/v1/status")).status);
  await page.goto(base + "/");
  result.dashboard_while_enrolling = page.url();
  const secret = (await page.textContent("#totp-secret")).trim();
  result.secret_length = secret.length;
  result.qr_svg = await page.evaluate(() => document.querySelector("#totp-qr svg") !== null);
  const key = base32Decode(secret);

  // 2. A wrong code does not enrol; the current one does, and shows the recovery codes once.
  const enrolStep = stepNow();
  const current = totp(key, enrolStep);
  await page.fill("#code", current === "000000" ? "111111" : "000000");
  await Promise.all([page.waitForNavigation(), page.click("#confirm")]);
  result.enrol_wrong_error = await page.evaluate(() => {
    const el = document.getElementById("sf-error");
    return el ? el.getAttribute("data-i18n") : null;
  });
  const enrolCode = totp(key, stepNow());
  const usedStep = stepNow();
  await page.fill("#code", enrolCode);
  await Promise.all([page.waitForNavigation(), page.click("#confirm")]);
  result.recovery_codes = await page.$$eval("#recovery-codes li", (lis) => lis.map((li) => li.textContent));
  await Promise.all([page.waitForURL(base + "/"), page.click("#continue")]);
  await page.waitForSelector('#tunnel-state:not([data-state=""])');
  result.warning_after_enrolment = await page.evaluate(() => !document.getElementById("second-factor-warning").hidden);
  await logout();

  // 3. The code used at enrolment is refused (replay), then a wrong one.
  result.replayed = await pastDelay(() => login(enrolCode), 10000);
  const wrong = String((Number(enrolCode) + 500000) % 1000000).padStart(6, "0");
  result.wrong = await pastDelay(() => login(wrong), 10000);
  result.without_code = await pastDelay(() => login(""), 15000);

  // 4. A fresh code (a later step than any used) logs in.
  const fresh = await pastDelay(async () => {
    while (stepNow() <= usedStep) await sleep(250);
    return login(totp(key, stepNow()));
  }, 60000);
  result.fresh = fresh;
  if (fresh.url === base + "/") {
    await page.waitForSelector('#tunnel-state:not([data-state=""])');
    await logout();
  }

  // 5. A recovery code works once.
  const recovery = result.recovery_codes[0] || "";
  result.recovery_first = await pastDelay(() => login(recovery), 10000);
  if (result.recovery_first.url === base + "/") {
    await page.waitForSelector('#tunnel-state:not([data-state=""])');
    await logout();
  }
  result.recovery_again = await pastDelay(() => login(recovery), 10000);
  result.ok = true;
} catch (e) {
  result.ok = false;
  result.error = String(e && e.stack ? e.stack : e);
} finally {
  await context.close();
}
process.stdout.write(JSON.stringify(result) + "\n");

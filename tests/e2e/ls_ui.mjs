// What the e2e browser scripts share: the run's config and report, Debian's chromium launched by
// playwright-core, Label Studio's login and task pages, and the one way a run ends (its JSON report
// on stdout; on failure also failure.png + failure.html and exit 1).

import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";

/** The config (argv[2]), its timeout and outDir, the report to fill, and a step logger to stderr. */
export function startRun(report, tag) {
  const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const timeout = config.timeoutMs ?? 60000;
  const out = config.outDir;
  fs.mkdirSync(out, { recursive: true });
  const result = { steps: [], ...report, consoleErrors: [] };
  const t0 = Date.now();
  const step = (name) => {
    result.steps.push({ name, ms: Date.now() - t0 });
    process.stderr.write(`[${tag} ${((Date.now() - t0) / 1000).toFixed(1)}s] ${name}\n`);
  };
  return { config, timeout, out, result, step };
}

// A fresh profile per run (the user-data dir), as chromium must have here; playwright takes it
// as launchPersistentContext's first argument rather than a --user-data-dir flag.
/** Headless chromium with one page whose console errors go to result.consoleErrors. */
export async function launch(config, timeout, result, extraArgs = []) {
  const context = await chromium.launchPersistentContext(config.userDataDir, {
    executablePath: config.chromium ?? "/usr/bin/chromium",
    headless: true,
    timeout,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync", ...extraArgs],
    viewport: { width: 1400, height: 900 },
    deviceScaleFactor: 1,
  });
  context.setDefaultTimeout(timeout);
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (msg) => {
    if (msg.type() === "error") result.consoleErrors.push(msg.text().slice(0, 500));
  });
  return { context, page };
}

/** Two animation frames: the canvas (Konva's or the page's) has painted (not a sleep: a paint barrier). */
export const painted = (page) =>
  page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true)))));

/** Log in through LS's own login form. */
export async function logIn(page, config) {
  await page.goto(`${config.url}/user/login/`);
  await page.fill("#email", config.username);
  await page.fill("#password", config.password);
  await Promise.all([
    page.waitForURL((u) => !u.pathname.startsWith("/user/login")),
    page.click('button[aria-label="Log In"]'),
  ]);
}

/** Open the task in the labeling UI (Data Manager with ?task= opens the editor on it). */
export async function openTask(page, config, timeout) {
  await page.goto(`${config.url}/projects/${config.project}/data?task=${config.task}`);
  await page.waitForFunction(() => window.Htx?.annotationStore?.selected, null, { timeout });
  await page.getByTestId("bottombar-submit-button").waitFor({ state: "visible" });
}

/** Click Submit; the answer to LS's POST /api/tasks/<id>/annotations, and its body (null if none). */
export async function submit(page) {
  const saved = page.waitForResponse(
    (r) => r.request().method() === "POST" && /\/api\/tasks\/\d+\/annotations/.test(r.url()),
  );
  await page.getByTestId("bottombar-submit-button").click();
  const response = await saved;
  return { response, annotation: await response.json().catch(() => null) };
}

/** Run the steps; print the report, close the browser, and on failure save what the page showed and exit 1. */
export async function finish({ context, page, out, result }, steps) {
  try {
    await steps();
  } catch (err) {
    result.error = String(err?.stack ?? err);
    try {
      await page.screenshot({ path: path.join(out, "failure.png") });
      fs.writeFileSync(path.join(out, "failure.html"), await page.content());
    } catch {}
    process.stdout.write(JSON.stringify(result) + "\n");
    await context.close();
    process.exit(1);
  }
  process.stdout.write(JSON.stringify(result) + "\n");
  await context.close();
}

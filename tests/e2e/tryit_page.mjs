// The backend's own try-it page in Debian's chromium, driven by playwright-core.
//
// Usage: node tryit_page.mjs <config.json>   (written by tests/e2e/test_tryit_page.py)
// Config: {url, imagePath, clickPct: [x%, y%], negativePct, boxPct: [x0%, y0%, x1%, y1%],
//          rightPct, outDir, userDataDir, chromium, timeoutMs}
// It opens the backend's / as a browser does, loads the image through the file picker, then:
// a click on the object; an Alt-click beside it (refines); Clear, a box dragged around the
// object and a right-click beside it; Clear, polygons, a click; finally "Automatic masks".
// After each answer it saves a screenshot and the overlay canvas's alpha channel, so Python
// can check what is drawn against what the server sent. One JSON line on stdout reports it all;
// every wait is bounded; on failure it saves failure.png + failure.html and exits 1.

import path from "node:path";
import { finish, launch, painted, startRun } from "./ls_ui.mjs";

const { config, timeout, out, result, step } = startRun({ calls: [], overlays: [] }, "tryit");
const { context, page } = await launch(config, timeout, result);
page.on("pageerror", (err) => result.consoleErrors.push(String(err).slice(0, 500)));
// What the page sent and got: bodies without the image (a data: URI of the whole file).
const shorten = (image) => (typeof image === "string" ? `${image.slice(0, 40)}…(${image.length} chars)` : image);
page.on("response", async (resp) => {
  const where = new URL(resp.url()).pathname;
  if (!["/predict", "/try/automatic-masks"].includes(where)) return;
  const request = resp.request().postDataJSON();
  if (request?.tasks?.[0]?.data) request.tasks[0].data.image = shorten(request.tasks[0].data.image);
  if (request?.image) request.image = shorten(request.image);
  const entry = { path: where, status: resp.status(), request, serverTiming: resp.headers()["server-timing"] ?? null };
  try {
    entry.response = await resp.json();
  } catch {
    entry.response = null;
  }
  result.calls.push(entry);
});

/** Wait until the page has drawn its n-th answer, then save a screenshot and the overlay. */
async function answered(n, name) {
  await page.waitForFunction((k) => document.body.dataset.answers === String(k), n, { timeout });
  await painted(page);
  await page.screenshot({ path: path.join(out, `${name}.png`) });
  const overlay = await page.evaluate(() => {
    const canvas = document.getElementById("overlay");
    const rgba = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let text = "";
    for (let start = 0; start < rgba.length / 4; start += 8192) {
      const alpha = [];
      for (let p = start; p < Math.min(start + 8192, rgba.length / 4); p++) alpha.push(rgba[4 * p + 3]);
      text += String.fromCharCode(...alpha);
    }
    return { width: canvas.width, height: canvas.height, alpha: btoa(text) };
  });
  result.overlays.push({ name, ...overlay, message: await page.locator("#message").innerText() });
  step(name);
}

await finish({ context, page, out, result }, async () => {
  const landing = await page.goto(`${config.url}/`);
  result.landing = { status: landing.status(), contentType: landing.headers()["content-type"] };
  await page.waitForFunction(() => document.body.dataset.ready === "true", null, { timeout });
  step("page ready");

  await page.setInputFiles("#file", config.imagePath);
  await page.waitForFunction(() => document.body.dataset.image === "loaded", null, { timeout });
  const geometry = await page.locator("#image").evaluate((el) => {
    const r = el.getBoundingClientRect();
    return { x: r.x, y: r.y, width: r.width, height: r.height, naturalWidth: el.naturalWidth, naturalHeight: el.naturalHeight };
  });
  result.image = geometry;
  const at = ([xp, yp]) => ({ x: geometry.x + (xp / 100) * geometry.width, y: geometry.y + (yp / 100) * geometry.height });
  await painted(page);
  await page.screenshot({ path: path.join(out, "before.png") });
  step("image open");

  // A click on the object, then an Alt-click beside it: a positive and a negative point.
  const click = at(config.clickPct);
  await page.mouse.click(click.x, click.y);
  await answered(1, "after_click");
  const negative = at(config.negativePct);
  await page.keyboard.down("Alt");
  await page.mouse.click(negative.x, negative.y);
  await page.keyboard.up("Alt");
  await answered(2, "after_refine");
  result.texts = {
    timings: await page.locator("#timings").innerText(),
    model: await page.locator("#model").innerText(),
    cache: await page.locator("#cache").innerText(),
    models: await page.locator("#models").innerText(),
    concept: await page.locator("#concept-status").innerText(),
    conceptDisabled: await page.locator("#concept").isDisabled(),
    badge: await page.locator("#model-badge").innerText(),
  };

  // A box dragged around the object, then a right-click beside it inside the box.
  await page.click("#clear");
  const [b0, b1] = [at(config.boxPct.slice(0, 2)), at(config.boxPct.slice(2))];
  await page.mouse.move(b0.x, b0.y);
  await page.mouse.down();
  await page.mouse.move(b1.x, b1.y, { steps: 8 });
  await page.mouse.up();
  await answered(3, "after_box");
  const right = at(config.rightPct);
  await page.mouse.click(right.x, right.y, { button: "right" });
  await answered(4, "after_right_click");

  // Polygons instead of a brush mask.
  await page.click("#clear");
  await page.check('input[name="output"][value="polygon"]');
  await page.mouse.click(click.x, click.y);
  await answered(5, "after_polygon");

  // Automatic masks: the page shows what the server says (GrabCut cannot: a clear refusal).
  await page.click("#amg-run");
  await page.waitForFunction(() => document.body.dataset.amg === "1", null, { timeout });
  result.texts.amg = await page.locator("#amg-status").innerText();
  step("automatic masks");
});

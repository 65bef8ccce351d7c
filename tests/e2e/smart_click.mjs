// An annotator's smart click in Label Studio's labeling UI, driven in Debian's chromium by playwright-core.
//
// Usage: node smart_click.mjs <config.json>   (written by tests/e2e/test_smart_click.py)
// Config: {url, username, password, project, task, label, labelIndex, promptControl,
//          clickPct: [x%, y%], outDir, userDataDir, chromium, timeoutMs, dump}
// (dump: true also saves the editor's DOM and a screenshot once it has loaded, for finding selectors.)
// It logs in, opens the task, turns Auto-Annotation on, picks the smart KeyPoint tool and its
// label, clicks the object, waits until the backend's mask is drawn, accepts it and submits.
// Screenshots (before.png, after_click.png, after_submit.png) go to outDir; one JSON line with
// what Python needs to check them (where the image is on screen, what LS sent and got) goes to
// stdout. Every wait is bounded; on failure it saves failure.png + failure.html and exits 1.
//
// Selectors are the ones LS 1.23.2's own code gives its controls (aria-label, data-testid),
// read in its editor source: tools are buttons with aria-label kebab-case(tool type); the smart
// copies (class lsf-tool_smart) sit in the hover menu of the toolbar's "Auto-Detect" button,
// which shows only while Auto-Annotation is on; Auto-Annotation is
// data-testid=bottombar-auto-annotation-toggle; suggestions are accepted with
// bottombar-accept-suggestions-button; Submit is bottombar-submit-button.

import fs from "node:fs";
import path from "node:path";
import { finish, launch, logIn, openTask, painted, startRun, submit } from "./ls_ui.mjs";

const { config, timeout, out, result, step } = startRun({ interactive: [] }, "e2e");
const { context, page } = await launch(config, timeout, result, ["--disable-quic", "--disable-component-update"]);
page.on("response", async (resp) => {
  if (!resp.url().includes("/interactive-annotating")) return;
  const entry = { url: resp.url(), status: resp.status(), request: resp.request().postDataJSON() };
  try {
    entry.response = await resp.json();
  } catch {
    entry.response = null;
  }
  result.interactive.push(entry);
});

await finish({ context, page, out, result }, async () => {
  // 1. Log in through LS's own login form.
  await logIn(page, config);
  step("logged in");

  // 2. Open the task in the labeling UI.
  await openTask(page, config, timeout);
  step("editor loaded");
  if (config.dump) {
    fs.writeFileSync(path.join(out, "dom.html"), await page.content());
    await page.screenshot({ path: path.join(out, "dump.png") });
  }
  const toggle = page.getByTestId("bottombar-auto-annotation-toggle");
  await toggle.waitFor();
  // A toggle: click it only when it is off (LS may remember the setting between sessions).
  if (!(await page.evaluate(() => window.Htx.autoAnnotation))) await toggle.click();
  await page.waitForFunction(() => window.Htx.autoAnnotation === true, null, { timeout });
  step("auto-annotation on");

  // 3. The smart KeyPoint tool (the copy LS adds for smart="true" controls) and the label of
  // the KeyPointLabels control (the second "Banana" on the page: controls render in config order).
  // The smart tools sit behind one "Auto-Detect" toolbar button; hovering it shows them.
  const autoDetect = page.locator("button.lsf-tool_smart", { has: page.locator(".lsf-tool__extra") });
  await autoDetect.hover();
  await autoDetect.locator('.lsf-tool__extra button[aria-label="key-point-tool"]').click();
  await page.locator(".lsf-label", { hasText: config.label }).nth(config.labelIndex).click();
  const state = await page.evaluate((control) => {
    const annotation = window.Htx.annotationStore.selected;
    const tool = Object.values(window.ToolManager.allInstances()[0].tools).find((t) => t.selected);
    return {
      selectedLabels: annotation.names.get(control).selectedValues(),
      tool: tool ? `${tool.toolName}${tool.dynamic ? "-dynamic" : ""}` : null,
      autoAnnotation: window.Htx.autoAnnotation,
    };
  }, config.promptControl);
  result.beforeClick = state;
  if (state.tool !== "KeyPointTool-dynamic" || !state.selectedLabels.includes(config.label)) {
    throw new Error(`smart keypoint tool or label not selected: ${JSON.stringify(state)}`);
  }
  step("smart keypoint tool and label selected");

  // 4. Where the image is on screen: the editor's <img alt="image"> has the displayed geometry
  // (Konva draws over it with the same transform), so image pixels map to screen pixels.
  const img = page.locator('img[alt="image"]');
  const geometry = await img.evaluate((el) => {
    const r = el.getBoundingClientRect();
    return { x: r.x, y: r.y, width: r.width, height: r.height, naturalWidth: el.naturalWidth, naturalHeight: el.naturalHeight };
  });
  result.image = geometry;
  result.stage = await page
    .locator(".konvajs-content")
    .first()
    .evaluate((el) => {
      const r = el.getBoundingClientRect();
      return { x: r.x, y: r.y, width: r.width, height: r.height };
    });
  const click = {
    x: geometry.x + (config.clickPct[0] / 100) * geometry.width,
    y: geometry.y + (config.clickPct[1] / 100) * geometry.height,
  };
  result.click = click;
  await painted(page);
  await page.screenshot({ path: path.join(out, "before.png") });
  step("before.png");

  // 5. The click: LS posts it to /api/ml/<id>/interactive-annotating, relays it to the backend,
  // and draws the returned brush region as a suggestion.
  const answered = page.waitForResponse((r) => r.url().includes("/interactive-annotating"));
  await page.mouse.click(click.x, click.y);
  const response = await answered;
  if (response.status() !== 200) throw new Error(`interactive-annotating -> HTTP ${response.status()}`);
  step("backend answered through LS");
  await page.waitForFunction(
    () => {
      const annotation = window.Htx.annotationStore.selected;
      return [...annotation.suggestions.values()].some((r) => r.type === "brushregion");
    },
    null,
    { timeout },
  );
  const accept = page.getByTestId("bottombar-accept-suggestions-button");
  await accept.waitFor({ state: "visible" });
  await painted(page);
  await page.screenshot({ path: path.join(out, "after_click.png") });
  result.afterClick = await page.evaluate(() => {
    const annotation = window.Htx.annotationStore.selected;
    return {
      suggestions: [...annotation.suggestions.values()].map((r) => r.type),
      suggestionsText: document.querySelector(".lsf-auto-accept__info")?.textContent ?? null,
    };
  });
  step("after_click.png");

  // 6. Accept the suggestion and submit the annotation (LS POSTs /api/tasks/<id>/annotations).
  await accept.click();
  await page.waitForFunction(() => window.Htx.annotationStore.selected.suggestions.size === 0, null, { timeout });
  result.afterAccept = await page.evaluate(() =>
    window.Htx.annotationStore.selected.regions.map((r) => ({ type: r.type, origin: r.origin, dynamic: !!r.dynamic })),
  );
  step("suggestion accepted");
  const { response: savedResponse, annotation } = await submit(page);
  result.submitStatus = savedResponse.status();
  result.annotation = annotation;
  if (savedResponse.status() !== 201) throw new Error(`submit -> HTTP ${savedResponse.status()}`);
  // LS then reloads the task in the editor; the screenshot waits for it (bounded), it asserts nothing.
  const annotationId = result.annotation?.id;
  await page
    .waitForFunction((id) => String(window.Htx?.annotationStore?.selected?.pk) === String(id), annotationId, { timeout: 20000 })
    .catch(() => step("editor did not reopen the submitted annotation in 20 s (screenshot shows what it did)"));
  await painted(page);
  result.afterSubmit = await page.evaluate(() => ({
    pk: window.Htx?.annotationStore?.selected?.pk ?? null,
    text: document.querySelector(".lsf-label-view, [class*=label-view]")?.innerText?.slice(0, 300) ?? null,
  }));
  await page.screenshot({ path: path.join(out, "after_submit.png") });
  step("after_submit.png");
});

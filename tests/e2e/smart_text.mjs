// Text and box prompts in Label Studio's labeling UI: a smart TextArea submission and smart
// rectangles (optionally drawn with a modifier key held), driven in Debian's chromium by playwright-core.
//
// Usage: node smart_text.mjs <config.json>
// Config: {url, username, password, project, task,
//          label, labelIndex,   the label to select first ("Cat"), and which of the equal-named labels
//                               on the page (controls render in config order: 0 = the first control's)
//          texts: ["red car"],  typed into the TextArea and submitted with its Add button, one by one
//          boxes: [[x1%, y1%, x2%, y2%]], drawn one by one with the smart Rectangle tool
//          autoAnnotation,      false: leave the Auto-Annotation toggle off (default true: on)
//          pickTool,            false: do not pick a tool, the label click alone chooses it (default true)
//          toolIndex,           which smart Rectangle tool when several controls have one (config order), default 0
//          modifier,            null or a playwright key ("Alt", "Shift", "Control") held while drawing
//          waitSuggestions,     true: after each prompt whose call returned regions, wait (timeoutMs) until
//                               the editor shows suggestions (drawn), before its screenshot
//          submit,              true: accept the suggestions and submit the annotation at the end
//          outDir, userDataDir, chromium, timeoutMs, callTimeoutMs}
// For every text and box it waits (callTimeoutMs) for the browser's POST
// /api/ml/<id>/interactive-annotating (LS relays it to the backend's /predict) and records
// the body the browser sent, LS's answer, and the editor's state. Prompts that make no call are
// recorded as such ("call": null), which is an answer too (e.g. for a modifier LS ignores).
// One JSON line goes to stdout (with where the image and the Konva stage are on screen, so that
// image pixels map to screenshot pixels); screenshots (before.png, after_<n>.png, after_submit.png)
// go to outDir. Every wait is bounded;
// on failure it saves failure.png + failure.html and exits 1.
//
// Selectors as in smart_click.mjs (LS 1.23.2's own aria-label / data-testid): the smart Rectangle
// sits in the hover menu of the toolbar's Auto-Detect button (aria-label "rectangle-tool"); the
// TextArea is data-testid textarea-input, its Add button textarea-add-button (TextArea.jsx).
// Why the TextArea calls the backend at all (LS 1.23.2 editor source): every control is smart by
// default (ControlBase `smart: true`); adding a text makes a classification area whose
// notifyDrawingFinished fires "regionFinishedDrawing" while Auto-Annotation is on (or the
// control has smartOnly), and the Data Manager posts that area's result as context.result.

import path from "node:path";
import { finish, launch, logIn, openTask, painted, startRun, submit } from "./ls_ui.mjs";

const { config, timeout, out, result, step } = startRun({ prompts: [] }, "e2e");
const callTimeout = config.callTimeoutMs ?? 15000;
const { context, page } = await launch(config, timeout, result);

const isCall = (r) => r.url().includes("/interactive-annotating");

/** Run `act` and return the interactive-annotating call it caused (request and LS's answer), or null. */
async function callAfter(act) {
  const answered = page.waitForResponse(isCall, { timeout: callTimeout }).catch(() => null);
  await act();
  const resp = await answered;
  if (!resp) return null;
  const response = await resp.json().catch(() => null);
  return { status: resp.status(), request: resp.request().postDataJSON(), response };
}

/** What the editor holds now: regions (suggestions apart), selected labels per control, tool. */
const editorState = () =>
  page.evaluate(() => {
    const annotation = window.Htx.annotationStore.selected;
    const tool = Object.values(window.ToolManager.allInstances()[0]?.tools ?? {}).find((t) => t.selected);
    const selected = {};
    for (const [name, tag] of annotation.names.entries()) {
      if (tag.isControlTag && typeof tag.selectedValues === "function" && /labels$/.test(tag.type)) {
        selected[name] = tag.selectedValues();
      }
    }
    return {
      tool: tool ? `${tool.toolName}${tool.dynamic ? "-dynamic" : ""}` : null,
      toolControl: tool?.control?.name ?? null,
      selectedLabels: selected,
      // Brush masks (value.rle) left out: the call's answer holds them, and the report stays small.
      regions: annotation.serializeAnnotation().map(({ type, from_name, value }) => {
        const { rle, ...rest } = value;
        return { type, from_name, value: rle ? { ...rest, rle: rle.length } : rest };
      }),
      suggestions: annotation.suggestions.size,
    };
  });

async function screenshot(name) {
  await painted(page);
  await page.screenshot({ path: path.join(out, name) });
}

/** The on-screen rectangle of the first element `selector` matches. */
const rect = (selector) =>
  page
    .locator(selector)
    .first()
    .evaluate((el) => {
      const b = el.getBoundingClientRect();
      return { x: b.x, y: b.y, width: b.width, height: b.height };
    });

/** Regions returned by a call (LS's answer holds the backend's prediction under data.result). */
const returned = (call) => call?.response?.data?.result?.length ?? 0;

/** Wait until the editor holds a suggestion (LS has turned the answer into drawable regions). */
const suggestionsShown = () =>
  page.waitForFunction(() => window.Htx.annotationStore.selected.suggestions.size > 0, null, { timeout });

/** Select config.label (a click toggles it, so only when it is not selected already). */
async function selectLabel() {
  if (!config.label) return;
  const label = page.locator(".lsf-label", { hasText: config.label }).nth(config.labelIndex ?? 0);
  if (!/\blsf-label_selected\b/.test((await label.getAttribute("class")) ?? "")) await label.click();
}

async function drawBox([x1, y1, x2, y2], modifier) {
  const r = await rect('img[alt="image"]');
  result.image = r;
  const at = (px, py) => [r.x + (px / 100) * r.width, r.y + (py / 100) * r.height];
  await page.mouse.move(...at(x1, y1));
  if (modifier) await page.keyboard.down(modifier);
  await page.mouse.down();
  await page.mouse.move(...at(x2, y2), { steps: 10 });
  await page.mouse.up();
  if (modifier) await page.keyboard.up(modifier);
}

await finish({ context, page, out, result }, async () => {
  await logIn(page, config);
  step("logged in");

  await openTask(page, config, timeout);
  // A toggle LS may remember between sessions: click it only when it is not as wanted.
  const wanted = config.autoAnnotation ?? true;
  if ((await page.evaluate(() => window.Htx.autoAnnotation)) !== wanted) {
    await page.getByTestId("bottombar-auto-annotation-toggle").click();
  }
  await page.waitForFunction((on) => window.Htx.autoAnnotation === on, wanted, { timeout });
  step(`editor loaded, auto-annotation ${wanted ? "on" : "off"}`);

  const boxes = config.boxes ?? [];
  if (boxes.length && config.pickTool !== false) {
    const autoDetect = page.locator("button.lsf-tool_smart", { has: page.locator(".lsf-tool__extra") });
    await autoDetect.hover();
    await autoDetect.locator('.lsf-tool__extra button[aria-label="rectangle-tool"]').nth(config.toolIndex ?? 0).click();
  }
  await selectLabel();
  result.before = await editorState();
  const { selectedLabels, tool, toolControl } = result.before;
  step(`selected: ${JSON.stringify(selectedLabels)}, tool ${tool} of ${toolControl}`);
  // The editor's <img alt="image"> has the displayed geometry (Konva draws with the same transform).
  result.image = await rect('img[alt="image"]');
  result.stage = await rect(".konvajs-content");
  await screenshot("before.png");

  for (const text of config.texts ?? []) {
    await page.getByTestId("textarea-input").fill(text);
    const call = await callAfter(() => page.getByTestId("textarea-add-button").click());
    if (config.waitSuggestions && returned(call)) await suggestionsShown();
    const image = await rect('img[alt="image"]'); // where the image is now (a layout shift would show)
    result.prompts.push({ kind: "text", text, call, after: await editorState(), image });
    await screenshot(`after_${result.prompts.length}.png`);
    step(`text "${text}": ${call ? `call, HTTP ${call.status}` : "no call"}`);
  }
  for (const box of boxes) {
    await selectLabel(); // LS drops the label selection after each drawn region
    const call = await callAfter(() => drawBox(box, config.modifier));
    if (config.waitSuggestions && returned(call)) await suggestionsShown();
    result.prompts.push({ kind: "box", box, modifier: config.modifier ?? null, call, after: await editorState() });
    await screenshot(`after_${result.prompts.length}.png`);
    const held = config.modifier ? ` + ${config.modifier}` : "";
    step(`box ${JSON.stringify(box)}${held}: ${call ? `call, HTTP ${call.status}` : "no call"}`);
  }

  if (config.submit) {
    const accept = page.getByTestId("bottombar-accept-suggestions-button");
    if (await accept.isVisible()) {
      await accept.click();
      await page.waitForFunction(() => window.Htx.annotationStore.selected.suggestions.size === 0, null, { timeout });
    }
    result.accepted = await editorState();
    const { response: resp, annotation } = await submit(page);
    result.submitStatus = resp.status();
    result.annotation = annotation;
    step(`submitted: HTTP ${resp.status()}`);
    // LS then reloads the task with the saved annotation: the editor goes, and comes back with the
    // image and the regions; the screenshot waits for that (bounded; it asserts nothing).
    const image = page.locator('img[alt="image"]');
    await image.waitFor({ state: "detached", timeout: 5000 }).catch(() => step("editor stayed after submitting"));
    await page
      .waitForFunction(
        (id) => {
          const annotation = window.Htx?.annotationStore?.selected;
          const img = document.querySelector('img[alt="image"]');
          return String(annotation?.pk) === String(id) && annotation.regions.length > 0 && img?.complete;
        },
        result.annotation?.id,
        { timeout: 20000 },
      )
      .catch(() => step("editor did not reopen the submitted annotation in 20 s"));
    await screenshot("after_submit.png");
    step("after_submit.png");
  }
});

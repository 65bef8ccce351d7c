// The try-it page: open an image, click, and see the mask this backend's /predict answers,
// asked exactly as Label Studio asks (its label config, smart regions in percent, the task's
// image as a data: URI or a URL). No framework, no build step, nothing loaded from elsewhere.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const LABEL = "Object";
  const MASK_RGB = [30, 144, 255]; // a click's mask
  const MASK_ALPHA = 0.5;
  const DRAG_PX = 5; // a press that moves less than this (screen pixels) is a click, not a box
  const CACHE_LEVELS = { local: "process (this worker's memory)", redis: "Redis", computed: "encoded for this click" };

  const state = {
    image: null, // {src, width, height}: src is what the task sends (data: URI or URL)
    prompts: [], // LS smart regions, in creation order
    drag: null, // {x0, y0, x1, y1, moved, negative} in image pixels while the pointer is down
    seq: 0, // the newest request; older answers are dropped
    answers: 0, // answers drawn: the browser test waits on it (body[data-answers])
    health: null, // GET /health
    info: null, // GET /try/info
  };
  const overlay = $("overlay");
  const masks = document.createElement("canvas"); // what the server answered, at the image's own size

  // ---- talking to the backend ----------------------------------------------------------------

  /** JSON from a route of this backend; a non-2xx answer throws its {message, fix}. */
  async function call(path, body, { acceptError = false } = {}) {
    const started = performance.now();
    const response = await fetch(path, {
      method: body === undefined ? "GET" : "POST",
      headers: { Accept: "application/json", ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    const text = await response.text();
    let data = null;
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
    if (!response.ok && !(acceptError && data)) {
      const why = data && data.message ? data.message + (data.fix ? ` (fix: ${data.fix})` : "") : text.slice(0, 200);
      throw new Error(`${response.status}: ${why || response.statusText}`);
    }
    return { data, headers: response.headers, ms: performance.now() - started };
  }

  /** Server-Timing `a;dur=1.2, cache;desc=local` -> {a: {dur: "1.2"}, cache: {desc: "local"}}. */
  function serverTiming(header) {
    const entries = {};
    for (const entry of (header || "").split(",")) {
      const [name, ...params] = entry.trim().split(";");
      if (!name) continue;
      entries[name] = {};
      for (const param of params) {
        const [key, value = ""] = param.trim().split("=");
        entries[name][key] = value.replace(/^"|"$/g, "");
      }
    }
    return entries;
  }

  /** The labeling config LS would send: the output control and smart keypoint and box prompts. */
  function labelConfig(output) {
    const tag = output === "polygon" ? "PolygonLabels" : "BrushLabels";
    return (
      '<View><Image name="image" value="$image"/>' +
      `<${tag} name="mask" toName="image"><Label value="${LABEL}" background="#1e90ff"/></${tag}>` +
      `<KeyPointLabels name="point" toName="image" smart="true"><Label value="${LABEL}" smart="true"/></KeyPointLabels>` +
      `<RectangleLabels name="box" toName="image" smart="true"><Label value="${LABEL}" smart="true"/></RectangleLabels>` +
      "</View>"
    );
  }

  const outputType = () => document.querySelector('input[name="output"]:checked').value;

  function region(type, value, extra = {}) {
    const { width, height } = state.image;
    const id = Math.random().toString(16).slice(2, 12);
    return {
      original_width: width,
      original_height: height,
      image_rotation: 0,
      value: { ...value, [type]: [LABEL] },
      id,
      from_name: type === "keypointlabels" ? "point" : "box",
      to_name: "image",
      type,
      origin: "manual",
      ...extra,
    };
  }

  async function predict() {
    if (!state.prompts.length) return;
    const mine = ++state.seq;
    const body = {
      tasks: [{ id: 1, data: { image: state.image.src } }],
      project: "try-it",
      label_config: labelConfig(outputType()),
      params: { login: null, password: null, context: { result: state.prompts } },
    };
    say("segmenting…");
    try {
      const { data, headers, ms } = await call("predict", body);
      if (mine !== state.seq) return; // a newer prompt is on its way
      const prediction = data.results[0];
      paintRegions(prediction.result, () => MASK_RGB);
      showTimings(serverTiming(headers.get("Server-Timing")), ms, prediction.score);
      say("");
      refreshInfo();
    } catch (error) {
      if (mine === state.seq) say(error.message, true);
    } finally {
      if (mine === state.seq) markAnswered();
    }
  }

  async function automaticMasks(event) {
    event.preventDefault();
    if (!state.image) return sayAmg("open an image first", true);
    const options = { output: outputType() };
    for (const input of $("amg-form").querySelectorAll("input")) {
      if (input.value !== "") options[input.name] = Number(input.value);
    }
    $("amg-run").disabled = true;
    sayAmg("running…");
    const mine = ++state.seq;
    try {
      const { data, headers, ms } = await call("try/automatic-masks", { image: state.image.src, options });
      if (mine !== state.seq) return;
      state.prompts = [];
      const count = paintRegions(data.result, (i) => PALETTE[i % PALETTE.length]);
      const total = serverTiming(headers.get("Server-Timing")).total;
      const server = total ? `, ${Number(total.dur).toFixed(0)} ms on the server` : "";
      sayAmg(`${count} masks in ${ms.toFixed(0)} ms${server}`);
      refreshInfo();
    } catch (error) {
      if (mine === state.seq) sayAmg(error.message, true);
    } finally {
      $("amg-run").disabled = false;
      document.body.dataset.amg = String(Number(document.body.dataset.amg || 0) + 1);
    }
  }

  // ---- masks -------------------------------------------------------------------------------

  /**
   * Label Studio's brush RLE (the rle-pack bit stream), most significant bit first: 32 bits the
   * number of values, 5 bits word size - 1, four 4-bit count-field sizes - 1; then chunks of one
   * flag bit (1: one word repeated, 0: literal words), 2 bits picking a count-field size, that
   * many bits holding count - 1, then the word(s). Values are RGBA, four per pixel; a pixel is
   * in the mask when its alpha is not 0.
   */
  function decodeBrush(bytes, width, height) {
    const totalBits = bytes.length * 8;
    let pos = 0;
    const read = (bits) => {
      if (pos + bits > totalBits) throw new Error("brush RLE ends early");
      let value = 0;
      for (let i = 0; i < bits; i++, pos++) value = value * 2 + ((bytes[pos >> 3] >> (7 - (pos & 7))) & 1);
      return value;
    };
    const count = read(32);
    if (count !== width * height * 4) throw new Error(`brush RLE holds ${count} values, the image needs ${width * height * 4}`);
    const wordBits = read(5) + 1;
    const sizes = [read(4) + 1, read(4) + 1, read(4) + 1, read(4) + 1];
    const values = new Uint8Array(count);
    for (let done = 0; done < count; ) {
      const repeated = read(1);
      const run = read(sizes[read(2)]) + 1;
      if (repeated) {
        values.fill(read(wordBits), done, Math.min(count, done + run));
      } else {
        for (let i = 0; i < run; i++) {
          const word = read(wordBits);
          if (done + i < count) values[done + i] = word;
        }
      }
      done += run;
    }
    const mask = new Uint8Array(width * height);
    for (let p = 0; p < mask.length; p++) mask[p] = values[4 * p + 3] !== 0 ? 1 : 0;
    return mask;
  }

  // Automatic masks: distinct colours, repeated after twelve.
  const PALETTE = [
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40],
  ];

  /** Draw LS regions (brush or polygon) into the mask layer; returns how many were drawn. */
  function paintRegions(regions, colourOf) {
    const { width, height } = state.image;
    const ctx = masks.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    const pixels = ctx.createImageData(width, height);
    const words = new Uint32Array(pixels.data.buffer); // one RGBA pixel per word (little-endian)
    let drawn = 0;
    regions.forEach((r, i) => {
      if (r.type !== "brushlabels") return;
      const [red, green, blue] = colourOf(i);
      const word = (red | (green << 8) | (blue << 16) | (255 << 24)) >>> 0;
      const mask = decodeBrush(r.value.rle, width, height);
      for (let p = 0; p < mask.length; p++) if (mask[p]) words[p] = word;
      drawn++;
    });
    ctx.putImageData(pixels, 0, 0);
    regions.forEach((r, i) => {
      if (r.type !== "polygonlabels") return;
      const [red, green, blue] = colourOf(i);
      ctx.fillStyle = `rgb(${red},${green},${blue})`;
      ctx.beginPath();
      r.value.points.forEach(([x, y], k) => ctx[k ? "lineTo" : "moveTo"]((x / 100) * width, (y / 100) * height));
      ctx.closePath();
      ctx.fill();
      drawn++;
    });
    redraw();
    return drawn;
  }

  // ---- drawing -----------------------------------------------------------------------------

  /** Image pixels per screen pixel: markers keep their screen size on any image. */
  const scale = () => overlay.width / overlay.getBoundingClientRect().width;

  function redraw() {
    const ctx = overlay.getContext("2d");
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    ctx.globalAlpha = MASK_ALPHA;
    ctx.drawImage(masks, 0, 0);
    ctx.globalAlpha = 1;
    const s = scale();
    const boxes = state.prompts.filter((p) => p.type === "rectanglelabels").map(boxPixels);
    if (state.drag && state.drag.moved) boxes.push(normalised(state.drag));
    ctx.lineWidth = 2 * s;
    ctx.strokeStyle = "#ffd400";
    for (const [x0, y0, x1, y1] of boxes) ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    for (const p of state.prompts.filter((q) => q.type === "keypointlabels")) {
      const x = (p.value.x / 100) * overlay.width;
      const y = (p.value.y / 100) * overlay.height;
      ctx.beginPath();
      ctx.arc(x, y, 5 * s, 0, 2 * Math.PI);
      ctx.fillStyle = p.is_positive ? "#18c24a" : "#e0322b";
      ctx.fill();
      ctx.lineWidth = 1.5 * s;
      ctx.strokeStyle = "#fff";
      ctx.stroke();
    }
  }

  const normalised = (d) => [Math.min(d.x0, d.x1), Math.min(d.y0, d.y1), Math.max(d.x0, d.x1), Math.max(d.y0, d.y1)];

  function boxPixels(p) {
    const { width, height } = state.image;
    const x0 = (p.value.x / 100) * width;
    const y0 = (p.value.y / 100) * height;
    return [x0, y0, x0 + (p.value.width / 100) * width, y0 + (p.value.height / 100) * height];
  }

  // ---- pointer: click = point, Alt/right = negative point, drag = box -------------------------

  function imagePoint(event) {
    const rect = overlay.getBoundingClientRect();
    const x = ((event.clientX - rect.left) / rect.width) * overlay.width;
    const y = ((event.clientY - rect.top) / rect.height) * overlay.height;
    return [Math.min(Math.max(x, 0), overlay.width), Math.min(Math.max(y, 0), overlay.height)];
  }

  overlay.addEventListener("contextmenu", (event) => event.preventDefault());
  overlay.addEventListener("pointerdown", (event) => {
    if (!state.image || event.button === 1) return;
    overlay.setPointerCapture(event.pointerId);
    const [x, y] = imagePoint(event);
    state.drag = { x0: x, y0: y, x1: x, y1: y, moved: false, negative: event.button === 2 || event.altKey };
  });
  overlay.addEventListener("pointermove", (event) => {
    if (!state.drag) return;
    [state.drag.x1, state.drag.y1] = imagePoint(event);
    const d = state.drag;
    d.moved = d.moved || Math.hypot(d.x1 - d.x0, d.y1 - d.y0) / scale() >= DRAG_PX;
    if (d.moved) redraw();
  });
  overlay.addEventListener("pointerup", (event) => {
    const d = state.drag;
    if (!d) return;
    state.drag = null;
    [d.x1, d.y1] = imagePoint(event);
    const { width, height } = state.image;
    if (d.moved) {
      const [x0, y0, x1, y1] = normalised(d);
      const value = { x: (100 * x0) / width, y: (100 * y0) / height, width: (100 * (x1 - x0)) / width, height: (100 * (y1 - y0)) / height, rotation: 0 };
      state.prompts.push(region("rectanglelabels", value, { is_positive: true }));
    } else {
      const value = { x: (100 * d.x0) / width, y: (100 * d.y0) / height, width: 0.5 };
      state.prompts.push(region("keypointlabels", value, { is_positive: !d.negative }));
    }
    redraw();
    predict();
  });

  $("undo").addEventListener("click", () => {
    state.prompts.pop();
    if (state.prompts.length) return predict();
    clearMasks();
  });
  $("clear").addEventListener("click", () => {
    state.prompts = [];
    clearMasks();
  });

  function clearMasks() {
    state.seq++;
    if (state.image) masks.getContext("2d").clearRect(0, 0, masks.width, masks.height);
    $("timings").replaceChildren();
    say("");
    redraw();
  }

  // ---- opening an image ----------------------------------------------------------------------

  function openImage(src, name) {
    const limit = state.info ? state.info.max_request_bytes : Infinity;
    if (src.startsWith("data:") && src.length + 8192 > limit) {
      const mb = (n) => (n / 2 ** 20).toFixed(1);
      return say(`${name} is ${mb(src.length)} MB as a data: URI, over this backend's MAX_REQUEST_BYTES (${mb(limit)} MB): open it by its http(s) address instead, or raise MAX_REQUEST_BYTES`, true);
    }
    const img = $("image");
    img.onload = () => {
      state.image = { src, width: img.naturalWidth, height: img.naturalHeight };
      state.prompts = [];
      for (const canvas of [overlay, masks]) [canvas.width, canvas.height] = [img.naturalWidth, img.naturalHeight];
      $("drop").hidden = true;
      $("frame").hidden = false;
      clearMasks();
      say(`${name}: ${img.naturalWidth}×${img.naturalHeight}. Click the object.`);
      document.body.dataset.image = "loaded";
    };
    img.onerror = () => say(`${name} could not be shown as an image`, true);
    document.body.dataset.image = "loading";
    img.src = src;
  }

  function openFile(file) {
    if (!file) return;
    const reader = new FileReader();
    reader.onload = () => openImage(reader.result, file.name);
    reader.onerror = () => say(`${file.name} could not be read`, true);
    reader.readAsDataURL(file);
  }

  $("file").addEventListener("change", (event) => openFile(event.target.files[0]));
  $("url-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const url = $("url").value.trim();
    if (!/^https?:\/\//i.test(url)) return say("give an http or https address", true);
    openImage(url, url);
  });
  for (const zone of [$("drop"), $("frame")]) {
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      openFile(event.dataTransfer.files[0]);
    });
  }
  $("amg-form").addEventListener("submit", automaticMasks);

  // ---- what the operator reads ---------------------------------------------------------------

  function say(text, bad = false) {
    $("message").textContent = text;
    $("message").classList.toggle("bad", bad);
  }

  function sayAmg(text, bad = false) {
    $("amg-status").textContent = text;
    $("amg-status").classList.toggle("bad", bad);
  }

  function markAnswered() {
    state.answers++;
    document.body.dataset.answers = String(state.answers);
  }

  function facts(list, rows) {
    list.replaceChildren(
      ...rows.flatMap(([term, value]) => {
        const dt = document.createElement("dt");
        const dd = document.createElement("dd");
        dt.textContent = term;
        dd.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
        return [dt, dd];
      }),
    );
  }

  function showTimings(timing, roundTripMs, score) {
    const ms = (name) => (timing[name] ? `${Number(timing[name].dur).toFixed(1)} ms` : null);
    const level = timing.cache ? timing.cache.desc : null;
    facts($("timings"), [
      ["cache", level ? CACHE_LEVELS[level] || level : null],
      ...["fetch", "encode", "decode", "output"].filter((n) => timing[n]).map((n) => [n, ms(n)]),
      ["round trip", `${roundTripMs.toFixed(0)} ms`],
      ["score", typeof score === "number" ? score.toFixed(3) : null],
    ]);
    document.body.dataset.cache = level || "";
  }

  function showHealth(health) {
    state.health = health;
    const badge = $("model-badge");
    badge.textContent = health.status === "UP" ? health.model_version : `${health.status}: ${health.error || ""}`;
    badge.classList.toggle("bad", health.status !== "UP");
    $("warnings").replaceChildren(
      ...(health.warnings || []).map((w) => Object.assign(document.createElement("li"), { textContent: w })),
    );
    // A concept (text prompt) engine: none exists yet; the control says whether one is configured.
    $("concept-status").textContent = health.concept_engine
      ? `concept engine ${health.concept_engine}: text prompts are not available from this page yet`
      : "no concept engine is configured: text prompts are unavailable";
    showModel();
  }

  /** /health says what is configured; /try/info what runs (device and precision as loaded). */
  function showModel() {
    const health = state.health || {};
    const info = state.info || {};
    const loading = info.model_loaded ? "n/a" : "(loading)";
    facts($("model"), [
      ["model id", health.model_version],
      ["engine", health.engine],
      ["family", health.family],
      ["model", health.model],
      ["checkpoint", health.checkpoint],
      ["device", info.device || loading],
      ["precision", info.precision || loading],
      ["quantize", health.quantize],
    ]);
  }

  function showInfo(info) {
    state.info = info;
    showModel();
    const cache = info.embedding_cache;
    facts($("cache"), [
      ["capacity", `${cache.capacity_mb} MB in each process${cache.redis ? ", shared through Redis" : ", no Redis"}`],
      ["held here", `${cache.entries} images, ${cache.held_mb} MB`],
      ["hits in process", cache.lookups.local],
      ["hits in Redis", cache.lookups.redis],
      ["encoded", cache.lookups.computed],
    ]);
    $("models").tBodies[0].replaceChildren(
      ...info.models.map((m) => {
        const row = document.createElement("tr");
        row.className = m.in_use ? "in-use" : m.available ? "" : "missing";
        const status = m.in_use ? "in use" : m.available ? "present" : "not downloaded";
        for (const text of [m.model, m.family, status]) {
          row.append(Object.assign(document.createElement("td"), { textContent: text }));
        }
        return row;
      }),
    );
    for (const [name, bounds] of Object.entries(info.automatic_masks)) {
      const input = $("amg-form").querySelector(`input[name="${name}"]`);
      if (input && "min" in bounds) Object.assign(input, { min: bounds.min, max: bounds.max });
    }
  }

  async function refreshInfo() {
    try {
      showInfo((await call("try/info")).data);
    } catch (error) {
      say(error.message, true);
    }
  }

  async function start() {
    try {
      showHealth((await call("health", undefined, { acceptError: true })).data);
      await refreshInfo();
      document.body.dataset.ready = "true";
    } catch (error) {
      say(error.message, true);
    }
  }

  start();
})();

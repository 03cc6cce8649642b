// The facegan page: runs generator.onnx with onnxruntime-web (the global `ort` of ort.wasm.min.js) on
// noise from page seeds. window.facegan exposes the figures it measures (stats) and its z functions.
"use strict";

(function () {
  const GRID_FACES = 32;
  const MAX_SEED = 4294967295;  // page seeds are 32-bit (mulberry32)
  const MAX_KEPT = 64;
  const $ = (id) => document.getElementById(id);
  const stats = {
    modelMs: null,          // onnxruntime-web started and the model loaded, ms after the page opened
    firstGridMs: null,      // the first grid on screen, ms after the page opened
    firstGridFaces: null,
    gridMs: null,           // the latest grid's inference time
    facesPerSecond: null,   // the latest grid's faces / inference time
    grids: 0, walkRenders: 0, arithmeticRenders: 0, threads: null,
  };
  const page = { stats, seedZ, slerp, error: null };
  window.facegan = page;

  let info = null, session = null, picked = null, walkFrom = null, walkTo = null;
  const slots = { a: [], b: [], c: [] };
  let kept = [];

  // ----- page seeds -> z: mulberry32 uniforms, Box-Muller pairs (export.py seed_z computes the same) -----

  function mulberry32(seed) {
    let state = seed >>> 0;
    return function () {
      state = (state + 0x6D2B79F5) >>> 0;
      let t = Math.imul(state ^ (state >>> 15), state | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function seedZ(seed, latentDim) {
    const next = mulberry32(seed), z = new Float32Array(latentDim);
    for (let i = 0; i < latentDim; i += 2) {
      const r = Math.sqrt(-2 * Math.log(1 - next())), angle = 2 * Math.PI * next();
      z[i] = r * Math.cos(angle);
      if (i + 1 < latentDim) z[i + 1] = r * Math.sin(angle);
    }
    return z;
  }

  // The point a fraction t of the way from z0 to z1 along their great circle (generate.py slerp).
  function slerp(z0, z1, t) {
    let dot = 0, n0 = 0, n1 = 0;
    for (let i = 0; i < z0.length; i++) { dot += z0[i] * z1[i]; n0 += z0[i] * z0[i]; n1 += z1[i] * z1[i]; }
    const omega = Math.acos(Math.min(1, Math.max(-1, dot / (Math.sqrt(n0) * Math.sqrt(n1)))));
    const out = new Float32Array(z0.length);
    if (Math.sin(omega) < 1e-6) {  // (anti)parallel: no great circle, walk straight
      for (let i = 0; i < z0.length; i++) out[i] = (1 - t) * z0[i] + t * z1[i];
    } else {
      const a = Math.sin((1 - t) * omega), b = Math.sin(t * omega), s = Math.sin(omega);
      for (let i = 0; i < z0.length; i++) out[i] = (a * z0[i] + b * z1[i]) / s;
    }
    return out;
  }

  function mean(zs) {
    const out = new Float64Array(zs[0].length);
    for (const z of zs) for (let i = 0; i < z.length; i++) out[i] += z[i] / zs.length;
    return out;
  }

  // ----- what the page reads, checked before use: the URL, the seed box, stored faces, generator.json -----

  // A page seed from text: a whole number 0..MAX_SEED written in digits, else null.
  function parseSeed(text) {
    const trimmed = String(text).trim();
    if (!/^[0-9]{1,10}$/.test(trimmed)) return null;
    const seed = Number(trimmed);
    return seed <= MAX_SEED ? seed : null;
  }

  // Messages the page keeps showing beside the status line, one per topic, about values it could not use.
  const notices = new Map();
  function notice(topic, text) {
    if (text) notices.set(topic, text); else notices.delete(topic);
    const box = $("notice");
    box.textContent = Array.from(notices.values()).join(" · ");
    box.hidden = notices.size === 0;
  }

  const isInt = (v, low, high) => Number.isInteger(v) && v >= low && v <= high;
  const isText = (v, longest) => typeof v === "string" && v.length <= longest;

  // What is wrong with generator.json's content, or null: every field the page uses, of a kind and size it can use.
  function infoProblem(info) {
    if (!info || typeof info !== "object" || Array.isArray(info)) return "it is not a JSON object";
    if (!isInt(info.latent_dim, 1, 4096)) return `latent_dim is ${JSON.stringify(info.latent_dim)}, not 1..4096`;
    if (!isInt(info.image_size, 8, 512)) return `image_size is ${JSON.stringify(info.image_size)}, not 8..512`;
    if (!(info.epoch === null || info.epoch === undefined || isInt(info.epoch, 0, 1e9))) return "epoch is not a count";
    if (!isText(info.generator, 300)) return "generator is not a file name";
    if (!(info.generator_sha1 === undefined || isText(info.generator_sha1, 100))) return "generator_sha1 is not a digest";
    if (info.recipe !== undefined && info.recipe !== null &&
        (typeof info.recipe !== "object" || !(info.recipe.preset == null || isText(info.recipe.preset, 50)))) {
      return "recipe is not a recipe";
    }
    const fid = info.fid;
    if (fid !== null && fid !== undefined && (typeof fid !== "object" || !Number.isFinite(fid.fid) ||
        !(fid.n == null || isInt(fid.n, 1, 1e9)) || !(fid.epoch == null || isInt(fid.epoch, 0, 1e9)))) {
      return "fid is not an FID measurement";
    }
    return null;
  }

  // The kept faces stored for this generator: those that are readable (at most MAX_KEPT), and how many were not.
  function readKept(stored) {
    let entries;
    try {
      entries = JSON.parse(stored || "[]");
    } catch (error) {
      return { faces: [], dropped: 1 };
    }
    if (!Array.isArray(entries)) return { faces: [], dropped: 1 };
    const faces = entries.filter((k) => k && typeof k === "object" && isText(k.label, 200) &&
      (k.seed === null || k.seed === undefined || isInt(k.seed, 0, MAX_SEED)) && Array.isArray(k.z) &&
      k.z.length === info.latent_dim && k.z.every(Number.isFinite)).slice(0, MAX_KEPT);
    return { faces, dropped: entries.length - faces.length };
  }

  // ----- the model: one run at a time -----

  let queue = Promise.resolve();
  function exclusive(task) {
    const result = queue.then(task);
    queue = result.catch(() => {});
    return result;
  }

  // z rows -> RGBA pixels, one Uint8ClampedArray per face (which rounds half to even, like numpy's rint).
  async function render(zs) {
    const d = info.latent_dim, size = info.image_size, n = zs.length;
    const data = new Float32Array(n * d);
    zs.forEach((z, i) => data.set(z, i * d));
    const output = await exclusive(() => session.run({ z: new ort.Tensor("float32", data, [n, d]) }));
    const dims = output.image && output.image.dims;
    if (!dims || dims.join() !== [n, size, size, 3].join()) {
      throw new Error(`generator.onnx made images of shape [${dims}], not [${n}, ${size}, ${size}, 3] as ` +
                      "generator.json says");
    }
    const image = output.image.data, pixels = [];
    for (let f = 0; f < n; f++) {
      const rgba = new Uint8ClampedArray(size * size * 4), offset = f * size * size * 3;
      for (let p = 0; p < size * size; p++) {
        for (let c = 0; c < 3; c++) rgba[4 * p + c] = (image[offset + 3 * p + c] + 1) * 127.5;
        rgba[4 * p + 3] = 255;
      }
      pixels.push(rgba);
    }
    return pixels;
  }

  function draw(canvas, face) {
    canvas.width = canvas.height = info.image_size;
    canvas.getContext("2d").putImageData(new ImageData(face.pixels, info.image_size), 0, 0);
    canvas.face = face;
  }

  function faceCanvas(face, className, onClick) {
    const canvas = document.createElement("canvas");
    if (className) canvas.className = className;
    draw(canvas, face);
    canvas.title = face.label;
    canvas.addEventListener("click", onClick || (() => pick(face, canvas)));
    return canvas;
  }

  // ----- grid, picking, keeping, saving -----

  function randomSeeds(n) {
    return Array.from(crypto.getRandomValues(new Uint32Array(n)));
  }

  async function showGrid(seeds) {
    const zs = seeds.map((s) => seedZ(s, info.latent_dim));
    const start = performance.now();
    const pixels = await render(zs);
    stats.gridMs = performance.now() - start;
    stats.facesPerSecond = seeds.length / (stats.gridMs / 1000);
    const grid = $("grid");
    grid.replaceChildren(...seeds.map((seed, i) =>
      faceCanvas({ label: `seed ${seed}`, seed, z: zs[i], pixels: pixels[i] })));
    stats.grids += 1;
    if (stats.firstGridMs === null) {
      stats.firstGridMs = performance.now();
      stats.firstGridFaces = seeds.length;
    }
    showStats();
  }

  function showStats() {
    const ms = (v) => `${Math.round(v)} ms`;
    $("status").textContent = `first grid ${ms(stats.firstGridMs)} after opening (model ready at ` +
      `${ms(stats.modelMs)}) · latest grid: ${stats.firstGridFaces} faces in ${ms(stats.gridMs)}, ` +
      `${stats.facesPerSecond.toFixed(1)} faces/s · onnxruntime-web ${ort.env.versions.web}, WebAssembly, ` +
      `${stats.threads} thread${stats.threads === 1 ? "" : "s"}`;
  }

  function pick(face, canvas) {
    document.querySelectorAll("canvas.picked").forEach((c) => c.classList.remove("picked"));
    if (canvas) canvas.classList.add("picked");
    picked = face;
    draw($("picked"), face);
    $("picked-label").textContent = face.label;
    for (const id of ["keep", "save", "walk-from", "walk-to", "add-a", "add-b", "add-c"]) $(id).disabled = false;
  }

  function storageKey() {
    return `facegan-kept:${info.generator_sha1 || `${info.generator}:${info.epoch}`}`;
  }

  function loadKept() {
    let stored = null;
    try {
      stored = localStorage.getItem(storageKey());
    } catch (error) { /* storage unavailable: nothing kept */ }
    const { faces, dropped } = readKept(stored);
    kept = faces;
    if (dropped > 0) {
      notice("kept", `${dropped} kept face${dropped === 1 ? "" : "s"} stored in this browser for this generator could ` +
             "not be read and were dropped");
      try {
        localStorage.setItem(storageKey(), JSON.stringify(kept));
      } catch (error) { /* storage unavailable */ }
    }
  }

  async function showKept() {
    const box = $("kept");
    if (!kept.length) {
      box.replaceChildren();
      return;
    }
    const pixels = await render(kept.map((k) => Float32Array.from(k.z)));
    box.replaceChildren(...kept.map((k, i) =>
      faceCanvas({ label: k.label, seed: k.seed, z: Float32Array.from(k.z), pixels: pixels[i] })));
  }

  function keep() {
    if (kept.length >= MAX_KEPT) {
      notice("keep", `at most ${MAX_KEPT} faces are kept: this one was not`);
      return Promise.resolve();
    }
    if (!kept.some((k) => k.label === picked.label)) {
      kept.push({ label: picked.label, seed: picked.seed, z: Array.from(picked.z) });
      try {
        localStorage.setItem(storageKey(), JSON.stringify(kept));
      } catch (error) { /* storage unavailable: kept until the page closes */ }
    }
    return showKept();
  }

  function savePng() {
    const canvas = document.createElement("canvas");
    draw(canvas, picked);
    const name = "facegan_" + picked.label.replace(/[^0-9A-Za-z.+-]+/g, "_") + ".png";
    canvas.toBlob((blob) => {
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = name;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    }, "image/png");
  }

  // ----- the walk: re-rendered for the slider's latest value, one render at a time -----

  let walkBusy = false, walkAgain = false;
  async function showWalk() {
    if (!walkFrom || !walkTo) return;
    if (walkBusy) { walkAgain = true; return; }
    walkBusy = true;
    do {
      walkAgain = false;
      const t = Number($("walk-t").value) / 100;
      const z = slerp(walkFrom.z, walkTo.z, t);
      const [pixels] = await render([z]);
      const label = `walk ${walkFrom.label} > ${walkTo.label}, t=${t.toFixed(2)}`;
      draw($("walk"), { label, z, pixels });
      $("walk").dataset.t = String(t);
      $("walk-label").textContent = label;
      stats.walkRenders += 1;
    } while (walkAgain);
    walkBusy = false;
  }

  function setWalkEnd(end) {
    if (end === "from") walkFrom = picked; else walkTo = picked;
    draw($(end === "from" ? "walk-a" : "walk-b"), picked);
    $("walk-t").disabled = !(walkFrom && walkTo);
    return showWalk();
  }

  // ----- arithmetic -----

  async function showArithmetic() {
    for (const name of ["a", "b", "c"]) {
      $("slot-" + name).replaceChildren(...slots[name].map((face) => faceCanvas(face, "small")));
    }
    if (!(slots.a.length && slots.b.length && slots.c.length)) return;
    const [a, b, c] = [slots.a, slots.b, slots.c].map((faces) => mean(faces.map((f) => f.z)));
    const z = new Float32Array(a.length);
    for (let i = 0; i < z.length; i++) z[i] = a[i] - b[i] + c[i];
    const names = (faces) => faces.map((f) => f.seed ?? "?").join(",");
    const label = `${names(slots.a)} - ${names(slots.b)} + ${names(slots.c)}`;
    const [pixels] = await render([z]);
    draw($("arithmetic"), { label, z, pixels });
    $("arithmetic").dataset.label = label;
    $("arithmetic-label").textContent = label;
    stats.arithmeticRenders += 1;
  }

  function addToSlot(name) {
    slots[name].push(picked);
    return showArithmetic();
  }

  // ----- start -----

  function fail(error) {
    page.error = String(error && error.message || error);
    const status = $("status");
    status.className = "error";
    status.textContent = `could not start: ${page.error}` +
      (location.protocol === "file:" ? " (open the page through a web server: python export.py RUN --serve)" : "");
  }

  async function start() {
    const response = await fetch("generator.json");
    if (!response.ok) throw new Error(`generator.json: HTTP ${response.status}`);
    try {
      info = await response.json();
    } catch (error) {
      throw new Error("generator.json is not JSON");
    }
    const problem = infoProblem(info);
    if (problem) throw new Error(`generator.json cannot be used: ${problem}`);
    const fid = info.fid ? ` · FID ${info.fid.fid.toFixed(1)} (epoch ${info.fid.epoch}, n=${info.fid.n})` : "";
    const recipe = info.recipe && info.recipe.preset ? `--preset ${info.recipe.preset}` : "";
    $("model-info").textContent = `${info.generator} · epoch ${info.epoch} · ${info.image_size} px · ` +
      `${info.latent_dim}-d z · ${recipe}${fid}`;
    ort.env.wasm.wasmPaths = new URL(".", location.href).href;
    session = await ort.InferenceSession.create("generator.onnx",
      { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
    const input = (session.inputMetadata || []).find((m) => m.name === "z");
    if (input && input.shape && Number.isInteger(input.shape[1]) && input.shape[1] !== info.latent_dim) {
      throw new Error(`generator.onnx takes ${input.shape[1]}-d z; generator.json says ${info.latent_dim}`);
    }
    stats.threads = ort.env.wasm.numThreads || 1;
    stats.modelMs = performance.now();
    // ?start=S: the grids show seeds S, S+1, ... in turn; else random seeds
    const params = new URLSearchParams(location.search);
    let next = params.has("start") ? parseSeed(params.get("start")) : null;
    if (params.has("start") && next === null) {
      notice("start", `?start=${params.get("start").slice(0, 40)} is not a page seed (a whole number 0..${MAX_SEED}): ` +
             "showing random faces");
    }
    const nextSeeds = () => {
      if (next === null) return randomSeeds(GRID_FACES);
      const seeds = Array.from({ length: GRID_FACES }, (_, i) => (next + i) >>> 0);
      next = (next + GRID_FACES) >>> 0;
      return seeds;
    };
    await showGrid(nextSeeds());
    loadKept();
    await showKept();

    $("new-faces").onclick = () => showGrid(nextSeeds()).catch(fail);
    $("show-seed").onclick = () => {
      const seed = parseSeed($("seed-input").value);
      if (seed === null) {
        notice("seed", `the seed box's "${$("seed-input").value.slice(0, 40)}" is not a page seed: give a whole ` +
               `number 0..${MAX_SEED}`);
        return;
      }
      notice("seed", null);
      const z = seedZ(seed, info.latent_dim);
      render([z]).then(([pixels]) => pick({ label: `seed ${seed}`, seed, z, pixels }, null)).catch(fail);
    };
    $("keep").onclick = () => keep().catch(fail);
    $("save").onclick = savePng;
    $("walk-from").onclick = () => setWalkEnd("from").catch(fail);
    $("walk-to").onclick = () => setWalkEnd("to").catch(fail);
    $("walk-t").oninput = () => showWalk().catch(fail);
    for (const name of ["a", "b", "c"]) {
      $("add-" + name).onclick = () => addToSlot(name).catch(fail);
      $("clear-" + name).onclick = () => { slots[name] = []; showArithmetic().catch(fail); };
    }
    $("walk").addEventListener("click", () => $("walk").face && pick($("walk").face, $("walk")));
    $("arithmetic").addEventListener("click", () => $("arithmetic").face && pick($("arithmetic").face, $("arithmetic")));
    $("new-faces").disabled = $("show-seed").disabled = false;
  }

  start().catch(fail);
})();

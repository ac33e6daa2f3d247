// The search page: one POST /api/search per query, each hit drawn as its frame strip with the audio
// gate and the attention per frame under it (the explain figure, live). Text from the server is only
// ever set as textContent, never parsed as HTML.
"use strict";

// px: the natural height and width of one frame in a thumbnail strip (style.css --frame). A strip is shown
// at most that size and shrinks to fit its card; the best-moment outline and the per-frame rows under it
// are laid out in fractions of the strip (style.css --count), so they stay aligned at any width.
const FRAME = 96;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "style") {
      for (const [name, setting] of Object.entries(value)) {
        if (name.startsWith("--")) node.style.setProperty(name, setting); // a CSS custom property
        else node.style[name] = setting;
      }
    } else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function videoUrl(kind, id) {
  return `/api/video${kind}?id=${encodeURIComponent(id)}`;
}

async function showHealth() {
  const status = document.getElementById("status");
  try {
    const response = await fetch("/api/health");
    const health = await response.json();
    if (!response.ok) throw new Error(health.error || response.statusText);
    const index = health.index;
    const how = index.mode === "stage1" ? "re-ranked by the trained GAIS heads" : "zero-shot CLIP (no trained heads)";
    status.textContent = `${index.videos} videos, ${health.frames} frames each · ${how} · ${index.kind} index built ${index.built_at}`;
    showWarning(health.warning);
  } catch (failure) {
    status.textContent = `health check failed: ${failure.message}`;
  }
}

function showWarning(text) {
  const warning = document.getElementById("warning");
  warning.hidden = !text;
  warning.textContent = text || "";
}

function cellRow(values, colour, title) {
  const row = el("div", { class: "cells" }); // one column per frame (style.css)
  values.forEach((value, f) => {
    const cell = el("div", { title: title(f) });
    cell.style.background = colour(value);
    row.append(cell);
  });
  return row;
}

function gateRow(frames) {
  if (frames.gates === null) {
    return el("div", { class: "cells none", text: "zero-shot index: no trained audio gate" });
  }
  return cellRow(
    frames.gates,
    (g) => (g === null ? "#c8c8c8" : `rgba(230, 120, 0, ${0.08 + 0.92 * g})`),
    (f) => `${frames.times[f].toFixed(1)} s: ${frames.gates[f] === null ? "no sound" : "gate " + frames.gates[f].toFixed(2)}`,
  );
}

// Attention sums to 1 over the frames: drawn on an absolute scale where an even share (1/T) is half
// strength and twice that is full, so near-even attention looks even. Zero-shot cosines have no such
// scale: drawn from the lowest to the highest frame.
function attentionRow(frames) {
  const values = frames.attention;
  const count = values.length;
  const low = Math.min(...values);
  const span = Math.max(...values) - low || 1;
  const strength = frames.attention_label === "attention" ? (a) => Math.min(1, (a * count) / 2) : (a) => (a - low) / span;
  return cellRow(
    values.map(strength),
    (a) => `rgba(31, 100, 200, ${0.08 + 0.92 * a})`,
    (f) => `${frames.times[f].toFixed(1)} s: ${frames.attention_label} ${values[f].toFixed(3)}`,
  );
}

function frameStrip(hit, card) {
  const count = hit.frames.times.length;
  const strip = el("div", { class: "frames", title: `play from ${hit.moment.toFixed(1)} s` });
  // width and height give the strip its aspect before it has loaded; CSS sets the size it is shown at
  const image = el("img", { alt: `frames of ${hit.video}`, width: count * FRAME, height: FRAME, loading: "lazy" });
  image.addEventListener("error", () => {
    image.replaceWith(el("div", { class: "missing", text: "video file not found" }));
  });
  image.src = videoUrl("/thumbnails", hit.video);
  const best = { left: `${(100 * hit.frames.best) / count}%`, width: `${100 / count}%` };
  strip.append(image, el("div", { class: "best", style: best }));
  strip.addEventListener("click", () => play(hit, card));
  return strip;
}

function play(hit, card) {
  let player = card.querySelector("video");
  if (!player) {
    player = el("video", { controls: "", preload: "metadata" });
    card.append(player);
  }
  player.addEventListener(
    "loadedmetadata",
    () => {
      player.currentTime = hit.moment;
      player.play().catch(() => {});
    },
    { once: true },
  );
  player.src = videoUrl("/file", hit.video);
}

function resultCard(hit) {
  const card = el("li", { class: "result", "data-video": hit.video });
  const gate = hit.audio_gate === null ? "no gate" : `audio gate ${hit.audio_gate.toFixed(2)}`;
  card.append(
    el(
      "div",
      { class: "title" },
      el("span", { class: "rank", text: `#${hit.rank}` }),
      el("span", { class: "video", text: hit.video }),
      el("span", { class: "meta", text: `score ${hit.score.toFixed(3)}` }),
      el("span", { class: "meta", text: `best moment ${hit.moment.toFixed(1)} s` }),
      el("span", { class: "meta", text: gate }),
    ),
  );
  card.append(
    el(
      "div",
      { class: "strips", style: { "--count": String(hit.frames.times.length) } },
      el("span", { class: "label", text: "frames" }),
      frameStrip(hit, card),
      el("span", { class: "label", text: "sound" }),
      gateRow(hit.frames),
      el("span", { class: "label", text: hit.frames.attention_label === "attention" ? "attention" : "similarity" }),
      attentionRow(hit.frames),
    ),
  );
  return card;
}

async function search(event) {
  event.preventDefault();
  const text = document.getElementById("query").value;
  const k = parseInt(document.getElementById("k").value, 10) || 10;
  const message = document.getElementById("message");
  const results = document.getElementById("results");
  message.textContent = "searching\u2026";
  try {
    const response = await fetch("/api/search", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text, k }),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
    results.replaceChildren(...answer.results.map(resultCard));
    message.textContent = answer.results.length ? "" : "no results";
    showWarning(answer.warning);
    document.body.dataset.searched = String(Date.now());
  } catch (failure) {
    results.replaceChildren();
    message.textContent = failure.message;
  }
}

document.getElementById("search").addEventListener("submit", search);
showHealth();

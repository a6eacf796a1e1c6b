// The drop page: zoom and pan, the heatmap overlay, and rescoring from the keyboard
// (SynchWeb's keys: 0-9 on ISPyB's scale, a/d previous/next, q/e first/last, h history,
// z/x/c/v zoom; MARCO's four classes on 1-4), each score advancing to the next drop.
import { putHumanScore } from "./api.js";

const page = document.getElementById("drop");
const imageId = page.dataset.image;
const canLabel = page.dataset.canLabel === "true";
const scales = JSON.parse(document.getElementById("scales").textContent);
const viewer = document.getElementById("viewer");
const stage = document.getElementById("stage");
const heat = document.getElementById("heat");
const heatClass = document.getElementById("heat-class");
const heatStatus = document.getElementById("heat-status");
const opacity = document.getElementById("opacity");
const scale = document.getElementById("scale");
const saved = document.getElementById("saved");

// zoom and pan
let zoom = 1, x = 0, y = 0;
function place() { stage.style.transform = `translate(${x}px, ${y}px) scale(${zoom})`; }
function zoomTo(level) {
  const box = viewer.getBoundingClientRect();
  const cx = box.width / 2, cy = box.height / 2;
  x = cx - ((cx - x) / zoom) * level;
  y = cy - ((cy - y) / zoom) * level;
  zoom = level;
  if (zoom === 1) { x = 0; y = 0; }
  place();
}
let drag = null;
viewer.addEventListener("pointerdown", (e) => { drag = { sx: e.clientX - x, sy: e.clientY - y }; viewer.setPointerCapture(e.pointerId); });
viewer.addEventListener("pointermove", (e) => { if (drag) { x = e.clientX - drag.sx; y = e.clientY - drag.sy; place(); } });
viewer.addEventListener("pointerup", () => { drag = null; });
viewer.addEventListener("wheel", (e) => { e.preventDefault(); zoomTo(Math.max(1, Math.min(8, zoom * (e.deltaY < 0 ? 1.25 : 0.8)))); }, { passive: false });

// the heatmap: cached ones come at once; otherwise 202 + Retry-After while it is computed
let heatRequest = 0;
async function loadHeatmap() {
  const mine = ++heatRequest;
  const label = heatClass.value;
  const url = `/api/v1/images/${imageId}/heatmap.png` + (label ? `?class=${encodeURIComponent(label)}` : "");
  heatStatus.textContent = "computing the heatmap…";
  for (let attempt = 0; attempt < 60 && mine === heatRequest; attempt++) {
    const answer = await fetch(url, { credentials: "same-origin" });
    if (answer.status === 202) {
      const wait = Number(answer.headers.get("Retry-After") || "2");
      await new Promise((resolve) => setTimeout(resolve, Math.min(wait, 5) * 1000));
      continue;
    }
    if (!answer.ok) {
      const body = await answer.json().catch(() => ({}));
      heatStatus.textContent = `no heatmap: ${body.detail || body.title || answer.status}`;
      return;
    }
    if (mine !== heatRequest) return;
    heat.src = url; // now cached on the server (and in the browser)
    heat.hidden = false;
    heat.dataset.loaded = "true";
    heatStatus.textContent = `SmoothGrad for ${answer.headers.get("X-Heatmap-Class")}` +
      (answer.headers.get("X-Heatmap-Cached") === "true" ? " (cached)" : "");
    return;
  }
}
function setOpacity() { heat.style.opacity = String(Number(opacity.value) / 100); }
opacity.addEventListener("input", setOpacity);
heatClass.addEventListener("change", loadHeatmap);
setOpacity();
loadHeatmap();

// rescoring
function currentScale() { return scale ? scale.value : "marco4"; }
function showScale() {
  if (!scale) return;
  for (const name of ["marco4", "ispyb10"]) document.getElementById(`keys-${name}`).hidden = name !== scale.value;
  localStorage.setItem("marco-scale", scale.value);
}
if (scale) {
  scale.value = localStorage.getItem("marco-scale") || "marco4";
  scale.addEventListener("change", showScale);
  showScale();
}
async function rescore(key) {
  const scheme = currentScale();
  const labels = scales[scheme];
  const index = scheme === "marco4" ? Number(key) - 1 : Number(key);
  const label = labels[index];
  if (!label) return;
  saved.textContent = `saving ${label}…`;
  try {
    const stored = await putHumanScore(imageId, label, scheme);
    saved.textContent = `saved: ${stored.label} (${stored.scheme})`;
    saved.dataset.saved = stored.label;
    if (page.dataset.next) window.location.href = page.dataset.next;
  } catch (error) {
    saved.textContent = `not saved: ${error.message}`;
  }
}

const go = (which) => { const link = document.getElementById(`go-${which}`); if (link) window.location.href = link.href; };
document.addEventListener("keydown", (event) => {
  if (event.target.closest("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key;
  if (/^[0-9]$/.test(key) && canLabel) { event.preventDefault(); rescore(key); }
  else if (key === "a") go("previous");
  else if (key === "d") go("next");
  else if (key === "q") go("first");
  else if (key === "e") go("last");
  else if (key === "h") document.getElementById("history").hidden ^= true;
  else if (key in { z: 1, x: 1, c: 1, v: 1 }) zoomTo({ z: 1, x: 2, c: 4, v: 8 }[key]);
});
page.dataset.ready = "true";

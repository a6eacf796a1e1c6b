// The plate grid: colours, filters and the keyboard (arrows between drops, Enter opens).
const data = JSON.parse(document.getElementById("grid-data").textContent);
const grid = document.getElementById("grid");
const colourBy = document.getElementById("colour-by");
const colourClass = document.getElementById("colour-class");
const filter = document.getElementById("filter");
const thumbs = document.getElementById("thumbs");
const legend = document.getElementById("legend");
const CLASS_COLOURS = { Clear: "#e9ecef", Crystals: "#2b8a3e", Other: "#ae3ec9", Precipitate: "#c99a2e" };
const HUMAN_FOUR = {
  // ISPyB's manual scale and Merck's ten classes, shown as the four-way class they mean
  Contaminated: "Other", "Light Precipitate": "Precipitate", "Heavy Precipitate": "Precipitate",
  "Phase Separation": "Precipitate", Spherulites: "Crystals", Microcrystals: "Crystals",
  "1D Crystals": "Crystals", "2D Crystals": "Crystals", "3D Crystals": "Crystals",
  "bad drop": "Other", clear: "Clear", "heavy precipitate": "Precipitate",
  "light precipitate": "Precipitate", "phase separation": "Precipitate",
  "large crystals": "Crystals", "medium crystals": "Crystals", "micro crystals": "Crystals",
  "needles & plates": "Crystals", "small crystals": "Crystals",
};

// one link per drop, in grid order (row, column, drop)
const cells = [];
const byPosition = new Map();
for (const cell of data.cells) {
  byPosition.set(`${cell.row}:${cell.column}:${cell.drop}`, cell);
}
for (const td of grid.querySelectorAll("td.well")) {
  const row = Number(td.dataset.row), column = Number(td.dataset.column);
  const box = document.createElement("div");
  box.className = "drops";
  for (let drop = 1; drop <= data.drops; drop++) {
    const cell = byPosition.get(`${row}:${column}:${drop}`);
    const link = document.createElement("a");
    link.className = "drop";
    link.tabIndex = -1;
    if (cell) {
      link.href = `/drops/${cell.image_id}`;
      link.dataset.image = cell.image_id;
      link.title = `${cell.well}.${drop} ${cell.top_class ?? "not scored"}` +
        (cell.p_crystal != null ? ` P(Crystals) ${cell.p_crystal.toFixed(2)}` : "") +
        (cell.human ? ` · human: ${cell.human}` : "");
      if (cell.status === "failed") link.classList.add("failed");
      if (cell.hit) link.classList.add("hit");
      if (cell.band === "unknown") {
        // the Unknown badge: calibrated top-1 confidence below the model card's unknown_below
        link.classList.add("unknown");
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = "?";
        link.appendChild(badge);
        link.title += " · Unknown (the model is unsure)";
      }
      if (cell.other && (cell.other.top_class !== cell.top_class || cell.other.hit !== cell.hit)) {
        link.classList.add("disagree");
        link.title += ` · other model: ${cell.other.top_class}${cell.other.hit ? " (hit)" : ""}`;
      }
      link.cell = cell;
    } else {
      link.classList.add("empty");
      link.removeAttribute("href");
    }
    link.dataset.row = row;
    link.dataset.column = column;
    link.dataset.drop = drop;
    box.appendChild(link);
    cells.push(link);
  }
  td.appendChild(box);
}

function topFour(cell) {
  // the four-way class with the highest probability (a ten-way top class is shown as its class)
  let best = null;
  for (const [label, p] of Object.entries(cell.four)) if (best === null || p > cell.four[best]) best = label;
  return best;
}

function heat(p) {
  // white -> green for a probability
  const t = Math.max(0, Math.min(1, p ?? 0));
  const r = Math.round(255 - t * (255 - 43)), g = Math.round(255 - t * (255 - 138)), b = Math.round(255 - t * (255 - 62));
  return `rgb(${r}, ${g}, ${b})`;
}

function colour() {
  const mode = colourBy.value, label = colourClass.value;
  for (const link of cells) {
    const cell = link.cell;
    if (!cell) continue;
    let fill = "#fff";
    if (mode === "p") fill = cell.four[label] != null ? heat(cell.four[label]) : "#fff";
    else if (mode === "top") fill = CLASS_COLOURS[topFour(cell)] ?? "#fff";
    else if (mode === "human") fill = cell.human ? CLASS_COLOURS[HUMAN_FOUR[cell.human] ?? cell.human] ?? "#868e96" : "#fff";
    else if (mode === "best") fill = heat(cell.best_p_crystal);
    link.style.backgroundColor = fill;
    link.style.setProperty("--fill", fill); // the colour bar under a thumbnail
    link.dataset.fill = fill;
  }
  legend.textContent = {
    p: `white = 0 … green = 1: P(${label})`,
    top: "top class: grey Clear · green Crystals · purple Other · ochre Precipitate",
    human: "latest human score (as its four-way class); white: not reviewed",
    best: "best P(Crystals) over every inspection of the plate",
  }[mode];
  const disagree = grid.querySelectorAll("a.drop.disagree").length;
  if (document.getElementById("compare").value) {
    legend.textContent += ` · the two models disagree on ${disagree} drop(s) (dashed blue)`;
  }
}

function matches(cell) {
  const rule = filter.value;
  if (!rule) return true;
  if (!cell) return false;
  if (rule === "hits") return cell.hit;
  if (rule === "unreviewed") return !cell.human;
  if (rule === "low") return Math.max(0, ...Object.values(cell.four)) < 0.5;
  if (rule === "unknown") return cell.band === "unknown";
  if (rule === "flagged") return cell.flags.length > 0;
  if (rule === "disagree") return cell.other && (cell.other.top_class !== cell.top_class || cell.other.hit !== cell.hit);
  if (rule.startsWith("class:")) return topFour(cell) === rule.slice(6);
  return true;
}

function applyFilter() {
  for (const link of cells) link.classList.toggle("dim", !matches(link.cell));
}

function showThumbs() {
  grid.classList.toggle("thumbs", thumbs.checked);
  for (const link of cells) {
    if (!link.cell) continue;
    if (thumbs.checked && !link.querySelector("img")) {
      const img = document.createElement("img");
      img.loading = "lazy";
      img.alt = "";
      img.src = `/api/v1/images/${link.cell.image_id}/thumbnail.jpg`;
      link.appendChild(img);
    }
    for (const img of link.querySelectorAll("img")) img.hidden = !thumbs.checked;
  }
}

// keyboard: arrows move between drops (left/right through drops, up/down through rows)
let at = cells.findIndex((link) => link.cell);
function focus(index) {
  if (index < 0 || index >= cells.length) return;
  cells[at]?.setAttribute("tabindex", "-1");
  at = index;
  cells[at].setAttribute("tabindex", "0");
  cells[at].focus();
}
const perRow = data.columns * data.drops;
grid.addEventListener("keydown", (event) => {
  const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -perRow, ArrowDown: perRow };
  if (event.key in moves) {
    event.preventDefault();
    focus(at + moves[event.key]);
  } else if (event.key === "Enter" && cells[at]?.href) {
    window.location.href = cells[at].href;
  }
});
for (const [index, link] of cells.entries()) link.addEventListener("focus", () => { at = index; });
if (at >= 0) cells[at].setAttribute("tabindex", "0");

const saved = JSON.parse(localStorage.getItem("marco-plate-view") || "{}");
if (saved.colourBy) colourBy.value = saved.colourBy;
if (saved.colourClass) colourClass.value = saved.colourClass;
function remember() {
  localStorage.setItem("marco-plate-view", JSON.stringify({ colourBy: colourBy.value, colourClass: colourClass.value }));
}
colourBy.addEventListener("change", () => { colour(); remember(); });
colourClass.addEventListener("change", () => { colour(); remember(); });
filter.addEventListener("change", applyFilter);
thumbs.addEventListener("change", showThumbs);
for (const select of document.querySelectorAll("#controls select")) {
  select.addEventListener("change", () => document.getElementById("controls").submit());
}
colour();
applyFilter();
grid.dataset.ready = "true";

// Compare page: several runs' edge series overlaid on one step axis.
import { getSpectrum, listRuns, pooled, session } from "./api.js";
import { alignByStep, color, lineChart } from "./charts.js";
import { num, step as fmtStep } from "./format.js";
import { el, showWho } from "./page.js";

const $ = (id) => document.getElementById(id);
const statusLine = $("status");
const params = new URLSearchParams(location.search);
let runsById = new Map();
let chart = null;

function selectedIds() {
  return Array.from($("runs").selectedOptions, (o) => Number(o.value));
}

function commonWindow(runs) {
  const all = [...new Set(runs.flatMap((r) => r.windows))].sort((a, b) => a - b);
  const shared = all.filter((w) => runs.every((r) => r.windows.includes(w)));
  return { all, preferred: shared[0] ?? all[0] };
}

function setUrl(ids, window, series) {
  const q = new URLSearchParams();
  if (ids.length) q.set("runs", ids.join(","));
  if (window) q.set("window", window);
  if (series !== "gap_ratio") q.set("series", series);
  history.replaceState(null, "", q.size ? `?${q}` : location.pathname);
}

function fillWindows(runs, wanted) {
  const { all, preferred } = commonWindow(runs);
  const select = $("window");
  select.replaceChildren(...all.map((w) => new Option(`W = ${w}`, w)));
  select.value = all.includes(wanted) ? wanted : preferred;
}

function showEmpty(text) {
  chart?.destroy();
  chart = null;
  $("compare-chart").replaceChildren();
  $("compare-chart").hidden = true;
  $("compare-table").hidden = true;
  $("compare-empty").hidden = false;
  $("compare-empty").textContent = text;
}

async function render() {
  const ids = selectedIds();
  const runs = ids.map((id) => runsById.get(id)).filter(Boolean);
  const window = Number($("window").value) || null;
  const key = $("series").value;
  const label = $("series").selectedOptions[0].textContent;
  setUrl(ids, window, key);
  $("compare-title").textContent = `${label[0].toUpperCase()}${label.slice(1)} by step` +
    (window ? `, W = ${window}` : "");
  if (!runs.length) {
    showEmpty("Pick one or more runs above (Ctrl- or Shift-click to pick several).");
    return;
  }
  const usable = runs.filter((r) => r.windows.includes(window));
  const spectra = await pooled(usable, 6, (r) => getSpectrum(r.id, window, "all"));
  const lines = [];
  usable.forEach((run, i) => {
    const s = spectra[i];
    if (s instanceof Error) return;
    lines.push({
      run,
      steps: s.points.map((p) => p.step),
      values: s.points.map((p) => p[key]),
    });
  });
  const skipped = runs.filter((r) => !r.windows.includes(window)).map((r) => r.name);
  statusLine.textContent = skipped.length ? `Not computed at W = ${window}: ${skipped.join(", ")}` : "";
  if (!lines.some((l) => l.steps.length)) {
    showEmpty("None of these runs has a complete window yet.");
    renderTable(lines);
    return;
  }
  $("compare-empty").hidden = true;
  $("compare-chart").hidden = false;
  chart?.destroy();
  $("compare-chart").replaceChildren();
  chart = lineChart($("compare-chart"), {
    series: lines.map((l, i) => ({
      label: `${l.run.name} (#${l.run.id})`, color: color(i), width: 2,
    })),
    data: alignByStep(lines),
    yLabel: label,
    height: 380,
  });
  renderTable(lines);
}

function renderTable(lines) {
  const rows = lines.map((l, i) => {
    let peak = null;
    let peakStep = null;
    l.values.forEach((v, j) => {
      if (Number.isFinite(v) && (peak === null || v > peak)) {
        peak = v;
        peakStep = l.steps[j];
      }
    });
    const swatch = el("span", { class: "badge", "aria-hidden": "true" }, "■");
    swatch.style.color = color(i);
    return el("tr", {}, [
      el("th", { scope: "row" }, [swatch, " ", el("a", { href: `/dashboard/runs/${l.run.id}` }, l.run.name)]),
      el("td", {}, l.run.project),
      el("td", { class: "num" }, fmtStep(l.steps.length)),
      el("td", { class: "num" }, fmtStep(l.run.last_step)),
      el("td", { class: "num" }, num(peak)),
      el("td", { class: "num" }, fmtStep(peakStep)),
      el("td", { class: "num" }, num(l.values[l.values.length - 1])),
    ]);
  });
  $("compare-body").replaceChildren(...rows);
  $("compare-table").hidden = rows.length === 0;
}

async function start() {
  const [s, runs] = await Promise.all([session(), listRuns()]);
  showWho(s);
  runsById = new Map(runs.map((r) => [r.id, r]));
  const wanted = (params.get("runs") || "").split(",").map(Number).filter(Number.isInteger);
  const missing = wanted.filter((id) => id > 0 && !runsById.has(id));
  const select = $("runs");
  select.replaceChildren(...runs.map((r) => {
    const option = new Option(`${r.name} · ${r.project} (#${r.id})`, r.id);
    option.selected = wanted.includes(r.id);
    return option;
  }));
  const series = params.get("series");
  if (series && [...$("series").options].some((o) => o.value === series)) $("series").value = series;
  fillWindows(wanted.map((id) => runsById.get(id)).filter(Boolean), Number(params.get("window")));
  await render();
  if (missing.length) {
    statusLine.textContent = `Not found or not visible to this token: run ${missing.join(", ")}`;
  }
  select.addEventListener("change", () => {
    fillWindows(selectedIds().map((id) => runsById.get(id)), Number($("window").value));
    render().catch(fail);
  });
  $("window").addEventListener("change", () => render().catch(fail));
  $("series").addEventListener("change", () => render().catch(fail));
  document.body.dataset.ready = "true";
}

function fail(error) {
  if (error.status !== 401) statusLine.textContent = `Error: ${error.message}`;
}

start().catch(fail);

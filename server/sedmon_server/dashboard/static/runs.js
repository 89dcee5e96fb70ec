// Runs page: every visible run's latest edge at the smallest window, filterable, refreshed.
import { getSpectrum, listRuns, pooled, session } from "./api.js";
import { sparkline } from "./charts.js";
import { ago, dateTime, fixed, step as fmtStep } from "./format.js";
import { el, phaseBadge, showWho, smallestEdge, stateBadge } from "./page.js";

const REFRESH_MS = 15000;
const params = new URLSearchParams(location.search);
const projectSelect = document.getElementById("project");
const stateSelect = document.getElementById("state");
const compareButton = document.getElementById("compare");
const statusLine = document.getElementById("status");
const body = document.getElementById("runs-body");
const selected = new Set();
const sparkCache = new Map(); // "run/window" -> {lastStep, upTo, values}
let allRuns = [];

function fillOptions(select, values, keep) {
  const current = keep ?? select.value;
  while (select.options.length > 1) select.remove(1);
  for (const v of values) select.add(new Option(v, v));
  select.value = values.includes(current) ? current : "";
}

function filtered() {
  return allRuns.filter((r) =>
    (!projectSelect.value || r.project === projectSelect.value) &&
    (!stateSelect.value || r.state === stateSelect.value));
}

// The run's gap ratios at its smallest window; a refresh fetches only the new windows.
async function sparkValues(run) {
  const edge = smallestEdge(run);
  if (!run.num_checkpoints || !edge) return [];
  const key = `${run.id}/${edge.window}`;
  const cached = sparkCache.get(key) ?? { lastStep: null, upTo: undefined, values: [] };
  if (cached.lastStep !== run.last_step) {
    const since = cached.upTo === undefined ? {} : { since_step: cached.upTo };
    const spectrum = await getSpectrum(run.id, edge.window, edge.group, since);
    const fresh = spectrum.points.filter((p) => cached.upTo === undefined || p.step > cached.upTo);
    cached.values = cached.values.concat(fresh.map((p) => p.gap_ratio));
    if (fresh.length) cached.upTo = fresh[fresh.length - 1].step;
    cached.lastStep = run.last_step;
    sparkCache.set(key, cached);
  }
  return cached.values;
}

function row(run, values) {
  const edge = smallestEdge(run);
  const check = el("input", { type: "checkbox", "aria-label": `Compare ${run.name}` });
  check.checked = selected.has(run.id);
  check.addEventListener("change", () => {
    if (check.checked) selected.add(run.id);
    else selected.delete(run.id);
    compareButton.disabled = selected.size < 1;
  });
  const link = el("a", { href: `/dashboard/runs/${run.id}` }, run.name);
  const alerts = run.firing_alerts ?? 0;
  const spark = el("td", {});
  spark.appendChild(sparkline(values instanceof Error ? [] : values,
    { label: `gap ratio at W=${edge ? edge.window : "?"}` }));
  const last = el("td", { class: "small muted" }, ago(run.last_checkpoint_at));
  last.title = dateTime(run.last_checkpoint_at);
  return el("tr", { "data-run-id": String(run.id) }, [
    el("td", {}, [check]),
    el("th", { scope: "row" }, [link]),
    el("td", {}, run.project),
    el("td", {}, [stateBadge(run.state)]),
    el("td", { class: "num" }, fmtStep(run.last_step)),
    el("td", {}, [phaseBadge(edge ? edge.phase : null)]),
    el("td", { class: "num" }, edge ? fixed(edge.gap_ratio, 3) : "–"),
    el("td", { class: "num" }, edge ? String(edge.signal_rank) : "–"),
    el("td", { class: `num alerts-count${alerts ? " firing" : ""}` }, String(alerts)),
    spark,
    last,
  ]);
}

async function render() {
  const runs = filtered();
  const table = document.getElementById("runs-table");
  const empty = document.getElementById("empty");
  const query = new URLSearchParams();
  if (projectSelect.value) query.set("project", projectSelect.value);
  if (stateSelect.value) query.set("state", stateSelect.value);
  history.replaceState(null, "", query.size ? `?${query}` : location.pathname);
  if (!runs.length) {
    table.hidden = true;
    empty.hidden = false;
    empty.textContent = allRuns.length
      ? "No run matches these filters."
      : "No runs yet. A training job creates one with sedmon.init(project=..., name=...).";
    return;
  }
  const values = await pooled(runs, 6, sparkValues);
  body.replaceChildren(...runs.map((run, i) => row(run, values[i])));
  document.getElementById("runs-caption").textContent =
    `${runs.length} of ${allRuns.length} runs. Gap ratio and signal rank at each run's ` +
    "smallest window, whole model.";
  empty.hidden = true;
  table.hidden = false;
}

async function refresh() {
  try {
    allRuns = await listRuns();
    fillOptions(projectSelect, [...new Set(allRuns.map((r) => r.project))].sort());
    fillOptions(stateSelect, [...new Set(allRuns.map((r) => r.state))].sort());
    await render();
    statusLine.textContent = `Updated ${new Date().toLocaleTimeString("en-GB")}`;
  } catch (error) {
    if (error.status !== 401) statusLine.textContent = `Could not load runs: ${error.message}`;
  }
}

async function start() {
  showWho(await session());
  projectSelect.value = params.get("project") ?? "";
  stateSelect.value = params.get("state") ?? "";
  allRuns = await listRuns();
  fillOptions(projectSelect, [...new Set(allRuns.map((r) => r.project))].sort(),
    params.get("project") ?? "");
  fillOptions(stateSelect, [...new Set(allRuns.map((r) => r.state))].sort(),
    params.get("state") ?? "");
  await render();
  statusLine.textContent = `Updated ${new Date().toLocaleTimeString("en-GB")}`;
  projectSelect.addEventListener("change", render);
  stateSelect.addEventListener("change", render);
  compareButton.addEventListener("click", () => {
    location.assign(`/dashboard/compare?runs=${[...selected].join(",")}`);
  });
  setInterval(() => {
    if (document.visibilityState === "visible") refresh();
  }, REFRESH_MS);
  document.body.dataset.ready = "true";
}

start().catch((error) => {
  if (error.status !== 401) statusLine.textContent = `Could not load runs: ${error.message}`;
});

// Run page: one run's edge over steps, its spectrum, phases, alerts, shifts and couplings.
import {
  getAlerts, getAnalysis, getMetrics, getMetricSeries, getRun, getSpectrum, session,
} from "./api.js";
import { alignByStep, bandsFromLabels, color, lineChart } from "./charts.js";
import { dateTime, fixed, num, pValue, signed, step as fmtStep } from "./format.js";
import { el, phaseBadge, showWho, smallestEdge, stateBadge } from "./page.js";

const LIVE_MS = 4000;
const ANALYSIS_EVERY_MS = 20000; // lag sweep and Granger are heavier: refresh them less often
const ANALYSIS_MIN_POINTS = 8; // fewer windows than this: the analyses have nothing to say
const MAX_RATIOS = 4;
const runId = Number(location.pathname.split("/").filter(Boolean).pop());
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const statusLine = $("status");

const view = {
  run: null,
  window: null,
  group: "all",
  metric: "",
  method: "threshold",
  points: [],
  metricSeries: { steps: [], values: [] },
  phases: [],
  shifts: [],
  alerts: null,
  ratiosChart: null,
  sigmaChart: null,
  analysedAt: 0,
  analyses: [], // the analysis kinds this server offers
};

function say(text) {
  statusLine.textContent = text;
}

function setUrl() {
  const q = new URLSearchParams();
  q.set("window", view.window);
  if (view.group !== "all") q.set("group", view.group);
  if (view.metric) q.set("metric", view.metric);
  if (view.method !== "threshold") q.set("phases", view.method);
  history.replaceState(null, "", `?${q}`);
}

function renderHeader() {
  const run = view.run;
  document.title = `${run.name} · sedmon`;
  $("run-name").textContent = run.name;
  const edge = smallestEdge(run);
  const live = phaseBadge(edge && edge.phase);
  live.title = `live phase at W=${edge ? edge.window : "?"}: ${live.title}`;
  $("run-badges").replaceChildren(stateBadge(run.state), " ", live);
  const sketch = run.sketch || {};
  $("run-meta").textContent = [
    `project ${run.project}`,
    `run #${run.id}`,
    `sketch ${sketch.method} k=${sketch.dim}`,
    `rank rule ${run.rank_rule}`,
    `windows ${run.windows.join(", ")}`,
    `created ${dateTime(run.created_at)}`,
  ].join(" · ");
  const last = view.points[view.points.length - 1];
  const facts = [
    ["Last step", fmtStep(run.last_step)],
    ["Checkpoints", fmtStep(run.num_checkpoints)],
    [`Gap ratio R* (W=${view.window})`, last ? fixed(last.gap_ratio, 3) : "–"],
    ["Signal rank k*", last ? String(last.signal_rank) : "–"],
    ["Edge strength", last ? fixed(last.edge_strength, 3) : "–"],
    ["Effective rank", last ? fixed(last.effective_rank, 2) : "–"],
    ["PC1 share", last ? `${fixed(last.pc1_share, 1)} %` : "–"],
    ["Firing alerts", String(run.firing_alerts ?? 0)],
  ];
  $("facts").replaceChildren(...facts.map(([k, v]) =>
    el("div", {}, [el("dt", {}, k), el("dd", {}, v)])));
}

function ratioCount() {
  return Math.min(MAX_RATIOS, view.window - 1);
}

function ratiosData() {
  const steps = view.points.map((p) => p.step);
  const series = [{ steps, values: view.points.map((p) => p.gap_ratio) }];
  for (let j = 0; j < ratioCount(); j++) {
    series.push({ steps, values: view.points.map((p) => p.ratios[j] ?? null) });
  }
  if (view.metric) series.push(view.metricSeries);
  // Alert steps join the x axis (with no values) so a marker past the last window still shows.
  const alertSteps = (view.alerts || []).map((a) => a.step).filter(Number.isFinite);
  const data = alignByStep([...series, { steps: alertSteps, values: alertSteps.map(() => null) }]);
  return data.slice(0, -1);
}

// On the ratio chart's step axis (metric and alert steps too), so the two charts line up.
function sigmaData() {
  const steps = view.points.map((p) => p.step);
  const series = [];
  for (let j = 0; j < view.window; j++) {
    series.push({
      steps,
      values: view.points.map((p) => (p.sigma[j] > 0 ? p.sigma[j] : null)),
    });
  }
  const xs = ratiosData()[0];
  const data = alignByStep([...series, { steps: xs, values: xs.map(() => null) }]);
  return data.slice(0, -1);
}

function overlays() {
  const steps = view.points.map((p) => p.step);
  const bands = view.phases.length === steps.length ? bandsFromLabels(steps, view.phases) : [];
  const markers = [];
  for (const shift of view.shifts) {
    markers.push({ step: shift.step, color: "#7b4fa0", label: `shift (${shift.method})`, dash: true });
  }
  for (const alert of view.alerts || []) {
    if (alert.step === null || alert.step === undefined) continue;
    if (alert.window && alert.window !== view.window) continue;
    const firing = alert.state === "firing";
    markers.push({
      step: alert.step,
      color: firing ? "#c0392b" : "#a07070",
      label: `${alert.rule}${firing ? "" : " (resolved)"}`,
    });
  }
  return { bands, markers };
}

function buildCharts() {
  view.ratiosChart?.destroy();
  view.sigmaChart?.destroy();
  view.ratiosChart = null;
  view.sigmaChart = null;
  const ratiosEl = $("ratios-chart");
  const sigmaEl = $("sigma-chart");
  ratiosEl.replaceChildren();
  sigmaEl.replaceChildren();
  const empty = view.points.length === 0;
  $("ratios-empty").hidden = !empty;
  $("sigma-empty").hidden = !empty;
  ratiosEl.hidden = empty;
  sigmaEl.hidden = empty;
  if (empty) return;
  const series = [{ label: "R* gap ratio", color: color(0), width: 2.5, points: true }];
  for (let j = 1; j <= ratioCount(); j++) {
    series.push({ label: `R${j} σ${j}/σ${j + 1}`, color: color(j), width: 1.2, dash: [5, 3] });
  }
  if (view.metric) {
    series.push({ label: view.metric, color: "#888888", width: 2, scale: "y2" });
  }
  view.ratiosChart = lineChart(ratiosEl, {
    series, data: ratiosData(), yLabel: "ratio", y2Label: view.metric || undefined, sync: "run",
  });
  view.ratiosChart.setOverlays(overlays());
  const sigmaSeries = Array.from({ length: view.window }, (_, j) => ({
    label: `σ${j + 1}`, color: color(j), width: j < 3 ? 2 : 1,
  }));
  view.sigmaChart = lineChart(sigmaEl, {
    series: sigmaSeries, data: sigmaData(), yLabel: "σ", yLog: true, height: 280, sync: "run",
  });
  view.sigmaChart.setOverlays({ bands: overlays().bands, markers: [] });
  ratiosEl.setAttribute("aria-label",
    `Gap ratio over ${view.points.length} windows of W=${view.window}, group ${view.group}`);
}

function updateCharts() {
  if (!view.ratiosChart || !view.sigmaChart) {
    buildCharts();
    return;
  }
  const o = overlays();
  view.ratiosChart.update(ratiosData(), o);
  view.sigmaChart.update(sigmaData(), { bands: o.bands, markers: [] });
}

function table(headers, rows, caption) {
  const head = el("tr", {}, headers.map(([text, cls]) => el("th", { scope: "col", class: cls }, text)));
  const body = rows.map((cells) => el("tr", {}, cells.map(([text, cls]) => el("td", { class: cls }, text))));
  const t = el("table", { class: "data" }, [el("thead", {}, head), el("tbody", {}, body)]);
  if (caption) t.append(el("caption", {}, caption));
  return t;
}

function emptyNote(text) {
  return el("p", { class: "muted small" }, text);
}

function renderAlerts() {
  const box = $("alerts");
  if (view.alerts === null) {
    box.replaceChildren(emptyNote("Alerts are not available on this server yet."));
    return;
  }
  if (!view.alerts.length) {
    box.replaceChildren(emptyNote("No alerts for this run."));
    return;
  }
  const rows = view.alerts.map((a) => [
    [el("span", { class: `badge ${a.state === "firing" ? "collapse" : "none"}` }, a.state)],
    [a.rule],
    [fmtStep(a.step), "num"],
    [a.window ? String(a.window) : "–", "num"],
    [a.summary],
    [dateTime(a.started_at), "small"],
  ]);
  box.replaceChildren(table(
    [["State"], ["Rule"], ["Step", "num"], ["W", "num"], ["Summary"], ["Started"]], rows));
}

function offers(kind) {
  return view.analyses.includes(kind);
}

function renderShifts(body, error) {
  const box = $("shifts");
  if (!offers("shifts")) {
    box.replaceChildren(emptyNote("Shift detection is not available on this server."));
  } else if (error) {
    box.replaceChildren(emptyNote(`Shift detection failed: ${error.message}`));
  } else if (!body) {
    box.replaceChildren(emptyNote(
      `Needs at least ${ANALYSIS_MIN_POINTS} windows; this view has ${view.points.length}.`));
  } else {
    const found = body.result.change_points.filter((c) => c.change_step !== null).length;
    const rows = body.result.change_points.map((c) => [
      [c.method],
      [c.change_step === null ? "none" : fmtStep(c.change_step), "num"],
      [fmtStep(c.candidate_step), "num"],
      [num(c.score), "num"],
    ]);
    box.replaceChildren(
      emptyNote(found ? `${found} of ${rows.length} detectors see a change (dashed lines).`
        : "No detector sees a change."),
      table([["Detector"], ["Change at step", "num"], ["Best candidate", "num"], ["Score", "num"]],
        rows, `Series: gap ratio at W=${view.window}, ${body.n} windows.`));
  }
}

async function loadSeries() {
  const [spectrum, metric] = await Promise.all([
    getSpectrum(runId, view.window, view.group),
    view.metric ? getMetricSeries(runId, view.metric) : Promise.resolve({ steps: [], values: [] }),
  ]);
  view.points = spectrum.points;
  view.metricSeries = metric;
}

async function loadOverlays() {
  const where = { window: view.window, group: view.group };
  const [phases, shifts, alerts] = await Promise.allSettled([
    view.points.length >= 3
      ? getAnalysis(runId, "phases", { ...where, method: view.method, metric: view.metric })
      : Promise.resolve(null),
    view.points.length >= ANALYSIS_MIN_POINTS
      ? getAnalysis(runId, "shifts", { ...where, method: "all" })
      : Promise.resolve(null),
    getAlerts(runId),
  ]);
  const phaseBody = phases.status === "fulfilled" ? phases.value : null;
  const shiftBody = shifts.status === "fulfilled" ? shifts.value : null;
  view.phases = phaseLabels(phaseBody);
  view.shifts = shiftBody
    ? shiftBody.result.change_points.filter((c) => c.change_step !== null)
      .map((c) => ({ step: c.change_step, method: c.method }))
    : [];
  view.alerts = alerts.status === "fulfilled" ? alerts.value : null;
  renderPhaseSummary(phaseBody, phases.status === "rejected" ? phases.reason : null);
  renderShifts(shiftBody, shifts.status === "rejected" ? shifts.reason : null);
  renderAlerts();
}

// The phases answer as one label per spectrum point, in point order.
function phaseLabels(body) {
  if (!body) return [];
  const byStep = new Map(body.result.steps.map((step, i) => [step, body.result.labels[i]]));
  return view.points.map((p) => byStep.get(p.step) || null);
}

function renderPhaseSummary(body, error) {
  const box = $("phase-summary");
  if (error) {
    box.textContent = `Phases could not be computed: ${error.message}`;
    return;
  }
  if (!body) {
    box.textContent = offers("phases") ? "Phases need at least 3 windows." : "";
    return;
  }
  const r = body.result;
  const parts = [`Phases (${r.method}): peak ${fixed(r.values[r.peak_index], 3)} at step ` +
    fmtStep(r.peak_step)];
  if (r.plateau_start_step !== null) {
    parts.push(`plateau ${fmtStep(r.plateau_start_step)}–${fmtStep(r.plateau_end_step)}`);
  }
  parts.push(r.collapse_step === null ? "no collapse" : `collapse from ${fmtStep(r.collapse_step)}`);
  const corr = Object.values(r.phase_correlation || {}).filter((c) => c.n >= 3 && c.r !== null);
  if (corr.length) {
    parts.push(`r with ${view.metric} by phase: ` + corr.map((c) =>
      `${c.phase} ${fixed(c.r, 2)} (n=${c.n})`).join(", "));
  }
  box.textContent = parts.join(" · ") + ".";
}

async function renderAnalyses() {
  const lagBox = $("lag-sweep");
  const grangerBox = $("granger");
  let note = null;
  if (!view.metric) note = "Choose a metric (for example val_loss) to see its coupling to the edge.";
  else if (view.points.length < ANALYSIS_MIN_POINTS) {
    note = `Needs at least ${ANALYSIS_MIN_POINTS} windows; this view has ${view.points.length}.`;
  }
  const where = { metric: view.metric, group: view.group };
  const [sweep, coupling] = await Promise.allSettled([
    note ? null : getAnalysis(runId, "lag-sweep", where),
    note ? null : getAnalysis(runId, "coupling", { ...where, window: view.window }),
  ]);
  const show = (box, kind, outcome, render) => {
    if (!offers(kind)) box.replaceChildren(emptyNote("Not available on this server."));
    else if (note) box.replaceChildren(emptyNote(note));
    else if (outcome.status === "rejected") {
      box.replaceChildren(emptyNote(`Could not be computed: ${outcome.reason.message}`));
    } else box.replaceChildren(...render(outcome.value));
  };
  show(lagBox, "lag-sweep", sweep, lagTable);
  show(grangerBox, "coupling", coupling, grangerTable);
}

function lagTable(body) {
  const r = body.result;
  const rows = r.windows.map((w, i) => [
    [String(w), "num"],
    [r.peak_lags[i] === null ? "–" : signed(r.peak_lags[i], 0), "num"],
    [fixed(r.peak_r[i], 3), "num"],
  ]);
  return [
    table([["W", "num"], ["Peak lag", "num"], ["r at peak", "num"]], rows,
      `Gap ratio against ${view.metric}, both detrended (cubic); up to ${body.n} checkpoints.`),
    emptyNote(r.lag_flip ? "Lag flip: the peak lag changes sign across windows."
      : "No lag flip across these windows."),
  ];
}

function grangerRow(label, t) {
  return [
    [label],
    [String(t.lag), "num"],
    [fixed(t.f, 2), "num"],
    [pValue(t.p), "num"],
    [fixed(t.r2_gain, 3), "num"],
    [`${t.n} / ${t.df_num}, ${t.df_den}`, "num"],
  ];
}

function grangerTable(body) {
  const r = body.result;
  const c = r.correlation;
  const out = [emptyNote(`Cross-correlation at W=${view.window}: peak r ${fixed(c.peak_r, 3)} ` +
    `at lag ${c.peak_lag === null ? "–" : signed(c.peak_lag, 0)} over ${body.n} checkpoints.`)];
  if (!r.granger) {
    out.push(emptyNote(`No Granger test: ${r.granger_error || "too few points"}.`));
    return out;
  }
  out.push(table(
    [["Direction"], ["Lag", "num"], ["F", "num"], ["p", "num"], ["ΔR²", "num"], ["N / df", "num"]],
    [grangerRow(`gap ratio → ${view.metric}`, r.granger.x_to_y),
      grangerRow(`${view.metric} → gap ratio`, r.granger.y_to_x)]));
  if (r.key_edge && r.key_edge.j !== null) {
    out.push(emptyNote(`Key edge: R${r.key_edge.j} = σ${r.key_edge.j}/σ${r.key_edge.j + 1} is ` +
      `the ratio most strongly coupled to ${view.metric}.`));
  }
  return out;
}

async function reload(rebuild = true) {
  say("Loading…");
  await loadSeries();
  renderHeader();
  await loadOverlays();
  if (rebuild) buildCharts();
  else updateCharts();
  view.analysedAt = Date.now();
  say(liveText());
  await renderAnalyses();
}

function liveText() {
  return $("live").checked && view.run.state === "running"
    ? `Live · step ${fmtStep(view.run.last_step)}` : `Step ${fmtStep(view.run.last_step)}`;
}

// New windows only: the points after the last one shown, appended.
async function loadNewPoints() {
  const last = view.points.length ? view.points[view.points.length - 1].step : undefined;
  const [spectrum, metric] = await Promise.all([
    getSpectrum(runId, view.window, view.group, last === undefined ? {} : { since_step: last }),
    view.metric ? getMetricSeries(runId, view.metric) : Promise.resolve({ steps: [], values: [] }),
  ]);
  view.points = view.points.concat(spectrum.points.filter((p) => last === undefined || p.step > last));
  view.metricSeries = metric;
}

async function poll() {
  if (!$("live").checked || document.visibilityState !== "visible") return;
  const run = await getRun(runId);
  const changed = run.last_step !== view.run.last_step || run.state !== view.run.state ||
    run.firing_alerts !== view.run.firing_alerts;
  view.run = run;
  if (!changed) return;
  await loadNewPoints();
  await loadOverlays();
  renderHeader();
  updateCharts();
  say(liveText());
  if (Date.now() - view.analysedAt >= ANALYSIS_EVERY_MS) {
    view.analysedAt = Date.now();
    await renderAnalyses();
  }
}

function fillSelect(select, values, current, label = (v) => v) {
  select.replaceChildren(...values.map((v) => new Option(label(v), v)));
  select.value = current;
}

async function start() {
  if (!Number.isInteger(runId)) throw new Error("no run id in this address");
  const [s, run, metrics] = await Promise.all([session(), getRun(runId), getMetrics(runId)]);
  const metricNames = metrics.map((m) => m.name).sort();
  showWho(s);
  view.analyses = s.features.analyses;
  view.run = run;
  const windows = run.windows;
  const wanted = Number(params.get("window"));
  view.window = windows.includes(wanted) ? wanted : windows[0];
  const groups = ["all", ...run.groups.filter((g) => g !== "all")];
  view.group = groups.includes(params.get("group")) ? params.get("group") : "all";
  const preferred = ["val_loss", "val/loss", "eval_loss", "loss"].find((m) => metricNames.includes(m));
  view.metric = metricNames.includes(params.get("metric")) ? params.get("metric") : (preferred || "");
  const method = params.get("phases");
  view.method = ["peak", "derivative", "threshold"].includes(method) ? method : "threshold";
  fillSelect($("window"), windows, view.window, (w) => `W = ${w}`);
  fillSelect($("group"), groups, view.group, (g) => (g === "all" ? "all (whole model)" : g));
  fillSelect($("metric"), ["", ...metricNames], view.metric, (m) => m || "none");
  $("phase-method").value = view.method;
  const onChange = async () => {
    view.window = Number($("window").value);
    view.group = $("group").value;
    view.metric = $("metric").value;
    view.method = $("phase-method").value;
    setUrl();
    await reload(true);
  };
  for (const id of ["window", "group", "metric", "phase-method"]) {
    $(id).addEventListener("change", () => onChange().catch(fail));
  }
  $("live").addEventListener("change", () => say(liveText()));
  setUrl();
  await reload(true);
  document.body.dataset.ready = "true";
  setInterval(() => poll().catch(fail), LIVE_MS);
}

function fail(error) {
  if (error.status === 401) return;
  if (error.status === 404) {
    $("run-name").textContent = "Run not found";
    say("This run does not exist, or your token's project cannot see it.");
    return;
  }
  say(`Error: ${error.message}`);
}

start().catch(fail);

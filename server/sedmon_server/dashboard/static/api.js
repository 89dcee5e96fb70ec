// The REST API as the dashboard calls it: same origin, the HttpOnly session cookie, JSON.

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

function loginUrl() {
  const here = location.pathname + location.search;
  return "/dashboard/login?next=" + encodeURIComponent(here);
}

export async function getJson(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const response = await fetch(url, {
    credentials: "same-origin",
    headers: { Accept: "application/json" },
  });
  if (response.status === 401) {
    location.assign(loginUrl());
    throw new ApiError(401, "not logged in");
  }
  if (!response.ok) {
    let detail = null;
    try {
      detail = (await response.json()).detail;
    } catch {
      detail = response.statusText;
    }
    throw new ApiError(response.status, detail);
  }
  return response.json();
}

let sessionPromise = null;

// {project, scope, features: {alerts, analyses: [kind...]}}: fetched once per page.
export function session() {
  if (!sessionPromise) sessionPromise = getJson("/dashboard/session");
  return sessionPromise;
}

// Runs visible to the session, all pages of them (the API pages by limit/offset).
export async function listRuns(params = {}) {
  const runs = [];
  const limit = 200;
  for (let offset = 0; ; offset += limit) {
    const page = await getJson("/api/v1/runs", { ...params, limit, offset });
    runs.push(...page.runs);
    if (page.runs.length < limit || runs.length >= (page.total ?? runs.length)) break;
  }
  return runs;
}

export function getRun(id) {
  return getJson(`/api/v1/runs/${encodeURIComponent(id)}`);
}

export function getSpectrum(id, window, group, extra = {}) {
  return getJson(`/api/v1/runs/${encodeURIComponent(id)}/spectrum`, { window, group, ...extra });
}

// Every metric of the run: [{name, steps, values}].
export async function getMetrics(id) {
  const body = await getJson(`/api/v1/runs/${encodeURIComponent(id)}/metrics`);
  return body.series;
}

// One metric's series {steps, values}; empty when the run never logged it.
export async function getMetricSeries(id, name) {
  const body = await getJson(`/api/v1/runs/${encodeURIComponent(id)}/metrics`, { name });
  const found = body.series.find((s) => s.name === name);
  return found ? { steps: found.steps, values: found.values } : { steps: [], values: [] };
}

export async function getAlerts(id) {
  const s = await session();
  if (!s.features.alerts) return null;
  const body = await getJson(`/api/v1/runs/${encodeURIComponent(id)}/alerts`);
  return body.alerts;
}

// An analysis of the run, or null when this server does not offer that kind.
export async function getAnalysis(id, kind, params = {}) {
  const s = await session();
  if (!s.features.analyses.includes(kind)) return null;
  return getJson(`/api/v1/runs/${encodeURIComponent(id)}/analysis/${kind}`, params);
}

// Runs `worker` over `items` with at most `width` in flight; results keep the input order.
export async function pooled(items, width, worker) {
  const results = new Array(items.length);
  let next = 0;
  async function lane() {
    while (next < items.length) {
      const i = next++;
      try {
        results[i] = await worker(items[i]);
      } catch (error) {
        results[i] = error;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, lane));
  return results;
}

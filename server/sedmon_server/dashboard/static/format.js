// Readable numbers, steps, times and p-values; "–" for anything missing.

export const MISSING = "–";

function missing(x) {
  return x === null || x === undefined || (typeof x === "number" && !Number.isFinite(x));
}

// Three significant digits, exponent form outside 1e-3..1e5, no trailing zeros.
export function num(x, digits = 3) {
  if (missing(x)) return MISSING;
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a >= 1e5 || a < 1e-3) return x.toExponential(digits - 1).replace("e+", "e");
  if (a >= 10 ** digits) return Math.round(x).toLocaleString("en-US");
  return String(Number(x.toPrecision(digits)));
}

export function fixed(x, decimals = 2) {
  return missing(x) ? MISSING : x.toFixed(decimals);
}

export function step(x) {
  return missing(x) ? MISSING : Math.round(x).toLocaleString("en-US");
}

export function signed(x, decimals = 2) {
  if (missing(x)) return MISSING;
  return (x > 0 ? "+" : "") + x.toFixed(decimals);
}

export function pValue(p) {
  if (missing(p)) return MISSING;
  if (p < 1e-4) return "< 0.0001";
  return p.toFixed(p < 0.01 ? 4 : 3);
}

export function ago(iso) {
  if (!iso) return MISSING;
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return MISSING;
  const s = Math.max(0, (Date.now() - t) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function dateTime(iso) {
  if (!iso) return MISSING;
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? MISSING : d.toLocaleString("en-GB", { hour12: false });
}

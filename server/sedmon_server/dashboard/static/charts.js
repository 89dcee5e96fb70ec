// uPlot line charts with phase bands and step markers, and SVG sparklines.
/* global uPlot */
import { num, step as fmtStep } from "./format.js";

export const PALETTE = [
  "#1f5fa8", "#c0392b", "#2e8b57", "#7b4fa0", "#d2691e",
  "#17869e", "#8c564b", "#c2417f", "#6b7a13", "#555555",
];

export const PHASE_FILL = {
  warmup: "rgba(120, 120, 120, 0.10)",
  rise: "rgba(46, 139, 87, 0.12)",
  plateau: "rgba(31, 95, 168, 0.12)",
  collapse: "rgba(192, 57, 43, 0.14)",
};

const AXIS_SIZE = 64; // px for each y axis' ticks and of its label: stacked charts line up
const LABEL_SIZE = 28;

export function color(i) {
  return PALETTE[i % PALETTE.length];
}

function cssVar(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

// Phase bands [{from, to, phase}] behind the series, in step units.
function bandsPlugin(getBands) {
  return {
    hooks: {
      drawClear: [
        (u) => {
          const bands = getBands();
          if (!bands.length) return;
          const { ctx, bbox } = u;
          ctx.save();
          for (const band of bands) {
            const x0 = Math.max(bbox.left, u.valToPos(band.from, "x", true));
            const x1 = Math.min(bbox.left + bbox.width, u.valToPos(band.to, "x", true));
            if (!(x1 > x0)) continue;
            ctx.fillStyle = PHASE_FILL[band.phase] || PHASE_FILL.warmup;
            ctx.fillRect(x0, bbox.top, x1 - x0, bbox.height);
          }
          ctx.restore();
        },
      ],
    },
  };
}

// Vertical markers [{step, color, label, dash}] over the series.
function markersPlugin(getMarkers) {
  return {
    hooks: {
      draw: [
        (u) => {
          const markers = getMarkers();
          if (!markers.length) return;
          const { ctx, bbox } = u;
          const px = devicePixelRatio || 1;
          ctx.save();
          ctx.font = `${11 * px}px system-ui, sans-serif`;
          ctx.textBaseline = "top";
          markers.forEach((m, i) => {
            const x = Math.round(u.valToPos(m.step, "x", true));
            if (x < bbox.left || x > bbox.left + bbox.width) return;
            ctx.strokeStyle = m.color;
            ctx.lineWidth = 1.5 * px;
            ctx.setLineDash(m.dash ? [4 * px, 3 * px] : []);
            ctx.beginPath();
            ctx.moveTo(x, bbox.top);
            ctx.lineTo(x, bbox.top + bbox.height);
            ctx.stroke();
            if (m.label) {
              ctx.fillStyle = m.color;
              const width = ctx.measureText(m.label).width;
              const right = x + 3 * px + width <= bbox.left + bbox.width;
              ctx.fillText(m.label, right ? x + 3 * px : x - 3 * px - width,
                bbox.top + 2 * px + (i % 3) * 13 * px);
            }
          });
          ctx.restore();
        },
      ],
    },
  };
}

// A line chart over steps. series: [{label, color, scale?, width?, dash?}], data: [xs, ...ys].
// Returns {plot, update(data, {bands, markers})}.
export function lineChart(el, {
  series, data, yLabel, y2Label, yLog = false, height = 320, sync = null,
}) {
  let bands = [];
  let markers = [];
  const axisColor = cssVar("--fg-muted", "#555");
  const gridColor = cssVar("--grid", "#e5e5e5");
  const axis = (extra) => ({
    stroke: axisColor,
    grid: { stroke: gridColor, width: 1 },
    ticks: { stroke: gridColor, width: 1 },
    ...extra,
  });
  const hasY2 = series.some((s) => s.scale === "y2");
  const tickText = (u, vals) => vals.map((v) => (v === null || v === undefined ? "" : num(v)));
  const opts = {
    width: Math.max(320, el.clientWidth || 640),
    height,
    scales: {
      x: { time: false },
      y: yLog ? { distr: 3 } : { auto: true },
      ...(hasY2 ? { y2: { auto: true } } : {}),
    },
    legend: { live: true },
    cursor: { drag: { x: true, y: false }, ...(sync ? { sync: { key: sync } } : {}) },
    series: [
      { label: "step", value: (u, v) => fmtStep(v) },
      ...series.map((s) => ({
        label: s.label,
        stroke: s.color,
        width: s.width ?? 1.5,
        dash: s.dash,
        scale: s.scale ?? "y",
        spanGaps: true,
        points: { show: s.points ?? false, size: 4 },
        show: s.show ?? true,
        value: (u, v) => num(v),
      })),
    ],
    axes: [
      axis({ label: "step", values: (u, vals) => vals.map((v) => fmtStep(v)) }),
      axis({ label: yLabel, scale: "y", values: tickText, size: AXIS_SIZE, labelSize: LABEL_SIZE }),
      // Every chart keeps a right gutter of one size, so stacked charts share their x pixels.
      hasY2
        ? axis({ label: y2Label, scale: "y2", side: 1, grid: { show: false }, values: tickText,
          size: AXIS_SIZE, labelSize: LABEL_SIZE })
        : { scale: "y", side: 1, size: AXIS_SIZE, label: " ", labelSize: LABEL_SIZE,
          grid: { show: false }, ticks: { show: false }, values: () => [], stroke: "transparent" },
    ],
    plugins: [bandsPlugin(() => bands), markersPlugin(() => markers)],
  };
  const plot = new uPlot(opts, data, el);
  el.uplot = plot; // reachable from the browser console and the browser tests
  el.overlays = () => ({ bands, markers }); // what the band and marker plugins draw, likewise
  const resize = new ResizeObserver(() => {
    const width = Math.max(320, el.clientWidth);
    if (Math.abs(width - plot.width) > 1) plot.setSize({ width, height });
  });
  resize.observe(el);
  return {
    plot,
    update(nextData, extras = {}) {
      bands = extras.bands ?? bands;
      markers = extras.markers ?? markers;
      plot.setData(nextData);
    },
    setOverlays(extras) {
      bands = extras.bands ?? bands;
      markers = extras.markers ?? markers;
      plot.redraw(false, false);
    },
    destroy() {
      resize.disconnect();
      plot.destroy();
    },
  };
}

// Aligns several {steps, values} series on the union of their steps (nulls where missing).
export function alignByStep(seriesList) {
  const all = new Set();
  for (const s of seriesList) for (const x of s.steps) all.add(x);
  const xs = Array.from(all).sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const ys = seriesList.map((s) => {
    const y = new Array(xs.length).fill(null);
    s.steps.forEach((x, i) => {
      const v = s.values[i];
      y[index.get(x)] = Number.isFinite(v) ? v : null;
    });
    return y;
  });
  return [xs, ...ys];
}

// Contiguous runs of one phase label per point -> bands split halfway between points.
export function bandsFromLabels(steps, labels) {
  const bands = [];
  let start = 0;
  for (let i = 1; i <= steps.length; i++) {
    if (i === steps.length || labels[i] !== labels[start]) {
      const from = start === 0 ? steps[0] : (steps[start - 1] + steps[start]) / 2;
      const to = i === steps.length ? steps[i - 1] : (steps[i - 1] + steps[i]) / 2;
      if (labels[start]) bands.push({ from, to, phase: labels[start] });
      start = i;
    }
  }
  return bands;
}

const SVG = "http://www.w3.org/2000/svg";

// A small inline SVG line of `values` (nulls skipped), with a text alternative.
export function sparkline(values, { width = 120, height = 28, label = "" } = {}) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "sparkline");
  svg.setAttribute("role", "img");
  const finite = values.filter((v) => Number.isFinite(v));
  svg.setAttribute("aria-label", finite.length
    ? `${label} from ${num(finite[0])} to ${num(finite[finite.length - 1])}, ` +
      `range ${num(Math.min(...finite))} to ${num(Math.max(...finite))}`
    : `${label}: no data yet`);
  if (finite.length < 2) return svg;
  const lo = Math.min(...finite);
  const hi = Math.max(...finite);
  const span = hi - lo || 1;
  const pad = 2;
  const pts = [];
  values.forEach((v, i) => {
    if (!Number.isFinite(v)) return;
    const x = pad + (i / (values.length - 1)) * (width - 2 * pad);
    const y = height - pad - ((v - lo) / span) * (height - 2 * pad);
    pts.push(`${x.toFixed(1)},${y.toFixed(1)}`);
  });
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", pts.join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "currentColor");
  line.setAttribute("stroke-width", "1.5");
  svg.appendChild(line);
  return svg;
}

// DOM pieces every page shares: element builder, badges, the signed-in line.

export function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  const list = Array.isArray(children) ? children : [children];
  for (const child of list) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const PHASE_TITLES = {
  rise: "rise: the gap ratio is growing towards its peak",
  plateau: "plateau: the gap ratio holds near its peak",
  collapse: "collapse: the gap ratio fell away after its plateau",
  warmup: "warmup: too few checkpoints to tell",
};

export function phaseBadge(phase) {
  const name = phase || "none";
  return el("span", { class: `badge ${name}`, title: PHASE_TITLES[phase] || "no edge yet" },
    phase || "no data");
}

export function stateBadge(state) {
  return el("span", { class: `badge state ${state}` }, state);
}

export function showWho(session) {
  const who = document.getElementById("who");
  if (!who) return;
  who.textContent = session.project
    ? `project ${session.project} · ${session.scope} token`
    : `all projects · ${session.scope} token`;
}

// The run's latest edge at its smallest window for the whole model (group "all").
export function smallestEdge(run) {
  const edges = (run.latest || []).filter((e) => (e.group ?? "all") === "all");
  if (!edges.length) return null;
  return edges.reduce((a, b) => (b.window < a.window ? b : a));
}

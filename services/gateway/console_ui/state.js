// What the page knows about the mesh: filled by the first `snapshot` event, then kept current by
// the typed events of /api/events. Every event carries whole objects, so applying one is an upsert.

const MAX_LOG_ENTRIES = 40;
// Distinct colours for the first models (in name order), then a hue from the name for the rest.
const PALETTE = ["#60a5fa", "#f472b6", "#34d399", "#fbbf24", "#a78bfa", "#fb923c", "#22d3ee",
  "#f87171", "#a3e635", "#e879f9"];

export const STATE_LABELS = {
  ready: "ready", loading: "loading", fetching: "fetching", waiting: "waiting for capacity",
  does_not_fit: "does not fit", failed: "failed", standby: "standby", remote: "split worker",
  unknown: "unknown",
};

// Pool events (services/gateway/event_diff.py) as the activity log says them.
const POOL_VERBS = {
  promoted: "took up", retired: "retired", loaded: "loaded", dropped: "dropped",
  fetch_failed: "could not fetch",
};

export const state = {
  self: null,
  peers: new Map(),
  models: new Map(),
  roles: [],
  rates: {},
  pool: new Map(),
  fetchingNames: new Map(),  // node id → names of the files it fetches (to log starts and ends)
  token: "",
  tokenHidden: false,
  version: "",
  connected: false,
  everConnected: false,
  log: [],
};

export const nodeLabel = (node) => node.name || node.short_id || "node";

/** This node first, then its peers by name. */
export function allNodes() {
  const peers = [...state.peers.values()].sort((a, b) => nodeLabel(a).localeCompare(nodeLabel(b)));
  return state.self ? [{ ...state.self, isSelf: true }, ...peers] : peers;
}

export function nodeById(id) {
  if (state.self && state.self.node_id === id) return state.self;
  return state.peers.get(id);
}

export function modelColor(name) {
  const index = [...state.models.keys()].sort().indexOf(name);
  if (index >= 0 && index < PALETTE.length) return PALETTE[index];
  let hash = 2166136261;
  for (const ch of name) hash = Math.imul(hash ^ ch.codePointAt(0), 16777619) >>> 0;
  return `hsl(${hash % 360} 70% 62%)`;
}

export function logLine(kind, text, at = new Date()) {
  state.log.unshift({ kind, text, at });
  state.log.sort((a, b) => b.at - a.at);
  state.log.length = Math.min(state.log.length, MAX_LOG_ENTRIES);
}

function nodeNamed(ref) {
  return nodeById(ref.node_id) || ref;
}

/** "bravo took up tiny-x — tiny-x is hot (12 req/min per server)". */
export function poolEventText(event) {
  const verb = POOL_VERBS[event.kind] || event.kind;
  const reason = event.reason ? ` — ${event.reason}` : "";
  return `${nodeLabel(nodeNamed(event))} ${verb} ${event.model}${reason}`;
}

function logPoolEvent(event) {
  const at = event.at_unix_s ? new Date(event.at_unix_s * 1000) : new Date();
  logLine("pool", poolEventText(event), at);
}

export function applySnapshot(status) {
  const firstSnapshot = !state.self;
  state.self = {
    node_id: status.node_id, short_id: status.short_id, name: status.name,
    vram_bytes: status.vram_bytes, is_client: status.is_client, served: status.served || [],
    models_on_disk: status.models_on_disk || [], version: status.version, rtt_ms: 0,
    role: status.role || "", standby: Boolean(status.standby), standby_reason: status.standby_reason || "",
    adopted: status.adopted || [], fetching: status.fetching || [],
  };
  state.pool = new Map((status.pool || []).map((m) => [m.model, m]));
  // What this node did lately, once: a reconnect must not log it again.
  if (firstSnapshot) {
    for (const e of status.pool_events || []) logPoolEvent({ ...e, node_id: e.node_id || status.node_id });
  }
  state.peers = new Map((status.peers || []).map((p) => [p.node_id, p]));
  state.models = new Map((status.mesh_models || []).map((m) => [m.model, m]));
  state.roles = status.roles || [];
  state.rates = status.request_rate_per_min || {};
  state.fetchingNames = new Map([state.self, ...state.peers.values()].map(
    (n) => [n.node_id, new Set((n.fetching || []).map((t) => t.name))]));
  state.token = status.invite_token || "";
  state.tokenHidden = Boolean(status.invite_token_hidden);
  state.version = status.version || "";
}

/** One handler per event kind of /api/events (services/gateway/events.py EventKind). */
export const handlers = {
  peer_joined(peer) {
    state.peers.set(peer.node_id, peer);
    logLine("join", `${nodeLabel(peer)} (${peer.short_id}) joined`);
  },
  peer_updated(peer) { state.peers.set(peer.node_id, peer); },
  peer_left(peer) {
    state.peers.delete(peer.node_id);
    logLine("leave", `${nodeLabel(peer)} (${peer.short_id}) left`);
  },
  node_updated(node) {
    if (!state.self) return;
    const { node_id: id, name } = node;
    Object.assign(state.self, node, { node_id: id || state.self.node_id, name: name || state.self.name });
  },
  plan_changed(plan) {
    state.roles = plan.roles || [];
    const summary = state.roles.map((r) => `${r.model}: ${r.role}`).join(", ") || "nothing here";
    logLine("plan", `plan: ${summary}`);
  },
  model_state(model) {
    if (model.state === "gone") state.models.delete(model.model);
    else state.models.set(model.model, model);
  },
  model_ready(model) {
    state.models.set(model.model, model);
    logLine("ready", `${model.model} is ready`);
  },
  request_rate(data) { state.rates = data.request_rate_per_min || {}; },
  pool_changed(data) { state.pool = new Map((data.pool || []).map((m) => [m.model, m])); },
  pool_event(event) { logPoolEvent(event); },
  transfer_progress(data) {
    // peer_updated / node_updated carry the same list (and come first): this only logs starts and ends.
    const node = nodeNamed(data);
    const before = state.fetchingNames.get(data.node_id) || new Set();
    const after = new Set((data.fetching || []).map((t) => t.name));
    for (const name of after) if (!before.has(name)) logLine("pool", `${nodeLabel(node)} is fetching ${name}`);
    for (const name of before) if (!after.has(name)) logLine("pool", `${nodeLabel(node)} stopped fetching ${name}`);
    state.fetchingNames.set(data.node_id, after);
    const known = nodeById(data.node_id);
    if (known) known.fetching = data.fetching || [];
  },
  log(entry) { if (entry.message) logLine(entry.level || "info", entry.message); },
};

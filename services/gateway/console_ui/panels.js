// The page's lists: header and banner, nodes with VRAM bars, models with state, invite, activity.

import { $, fmtBytes, fmtDuration, h, plural } from "./dom.js";
import { allNodes, modelColor, nodeById, nodeLabel, STATE_LABELS, state } from "./state.js";

const COPIED_FEEDBACK_MS = 1500;
const SHORT_ID_CHARS = 8;
const BANNER_TEXT = "Lost contact with this node — it may be down or restarting. "
  + "Reconnecting… (what you see is the last known state)";
const HIDDEN_TOKEN_TEXT = "hidden from remote viewers — open the console on the node itself, "
  + "or start it with MESH_LLM_CONSOLE_SHOW_TOKEN=1";

export function renderHeader() {
  const conn = $("conn");
  const banner = $("banner");
  document.body.classList.toggle("stale", !state.connected && state.everConnected);
  if (state.connected) {
    conn.textContent = "live";
    conn.className = "pill pill-live";
  } else {
    conn.textContent = state.everConnected ? "offline" : "connecting";
    conn.className = state.everConnected ? "pill pill-down" : "pill pill-wait";
  }
  banner.hidden = state.connected || !state.everConnected;
  banner.textContent = BANNER_TEXT;
  $("version").textContent = state.version ? `v${state.version}` : "";
  if (state.self) {
    $("self-name").textContent = state.self.name || "this node";
    $("self-short-id").textContent = state.self.short_id || "";
  }
  const ready = [...state.models.values()].filter((m) => m.state === "ready").length;
  $("mesh-summary").textContent = state.self
    ? `${plural(allNodes().length, "node")} · ${plural(ready, "model")} ready` : "";
}

function diskBytes(node, model) {
  const file = (node.models_on_disk || []).find((m) => m.name === model);
  return file ? file.bytes : 0;
}

function vramBar(node, segments, used) {
  const bar = h("div", { class: "bar", role: "meter", "aria-valuemin": 0,
    "aria-valuemax": node.vram_bytes || 0, "aria-valuenow": used, "aria-label": `VRAM of ${nodeLabel(node)}` });
  for (const seg of segments) {
    const part = h("span", { class: "bar-part", title: `${seg.model}: ${fmtBytes(seg.bytes)}` });
    part.style.width = `${node.vram_bytes ? Math.min(100, (100 * seg.bytes) / node.vram_bytes) : 0}%`;
    part.style.background = modelColor(seg.model);
    bar.append(part);
  }
  return bar;
}

/** "tiny-x.gguf: 12.0 MB of 200 MB · 5.1 MB/s · 37 s left", with a bar, per file being fetched. */
function transferItem(transfer) {
  const done = transfer.bytes_total ? Math.min(1, transfer.bytes_done / transfer.bytes_total) : 0;
  const bar = h("div", { class: "bar transfer-bar", role: "progressbar", "aria-valuemin": 0,
    "aria-valuemax": transfer.bytes_total || 0, "aria-valuenow": transfer.bytes_done || 0,
    "aria-label": `fetching ${transfer.name}` });
  const part = h("span", { class: "bar-part" });
  part.style.width = `${100 * done}%`;
  bar.append(part);
  const eta = fmtDuration(transfer.eta_s);
  const text = [
    `${transfer.name}: ${fmtBytes(transfer.bytes_done)} of ${fmtBytes(transfer.bytes_total)}`,
    transfer.bytes_per_s ? `${fmtBytes(transfer.bytes_per_s)}/s` : "",
    eta ? `${eta} left` : "",
  ].filter(Boolean).join(" · ");
  return h("div", { class: "transfer", "data-file": transfer.name },
    h("div", { class: "transfer-text muted", text: `fetching ${text}` }), bar,
    transfer.error ? h("div", { class: "transfer-error", text: transfer.error }) : null);
}

function poolLines(node) {
  const lines = [];
  if (node.standby) {
    // Placement's reasons may say "standby: …" themselves; the line says it once.
    const why = (node.standby_reason || "serves nothing yet").replace(/^standby:\s*/i, "");
    lines.push(h("div", { class: "node-standby", text: `standby — ${why}` }));
  }
  for (const adoption of node.adopted || []) {
    const how = adoption.by_hand ? "loaded by hand" : "took up";
    const why = adoption.reason ? `: ${adoption.reason}` : "";
    lines.push(h("div", { class: "node-adopted muted", "data-model": adoption.model,
      text: `${how} ${adoption.model}${why}` }));
  }
  return [...lines, ...(node.fetching || []).map(transferItem)];
}

function nodeItem(node) {
  // What a node holds in VRAM: each served model's file size times its share of the layers.
  const segments = (node.served || []).filter((m) => m.role !== "standby").map((m) => ({
    model: m.model, bytes: diskBytes(node, m.model) * (m.layer_share || (m.role === "solo" ? 1 : 0)),
  }));
  const used = segments.reduce((sum, seg) => sum + seg.bytes, 0);
  const badges = [
    node.isSelf ? h("span", { class: "badge badge-self", text: "this node" }) : null,
    node.is_client ? h("span", { class: "badge", text: "client" }) : null,
    !node.isSelf && node.rtt_ms ? h("span", { class: "badge", text: `${node.rtt_ms.toFixed(1)} ms` }) : null,
    node.path === "relayed" ? h("span", { class: "badge", text: "relayed" }) : null,
    node.path === "unreachable" ? h("span", { class: "badge badge-warn", text: "unreachable from here" }) : null,
    node.standby ? h("span", { class: "badge badge-standby", text: "standby", title: node.standby_reason }) : null,
    node.role === "fetching" ? h("span", { class: "badge badge-fetching", text: "fetching" }) : null,
  ];
  const vramText = node.is_client ? "API-only client, no GPU share"
    : `${fmtBytes(used)} of ${fmtBytes(node.vram_bytes)} in use`;
  const served = (node.served || []).map((m) => `${m.model} (${m.role.replace("_", " ")})`).join(", ");
  return h("li", { class: "node-item", "data-node-id": node.node_id, "data-role": node.role || "" },
    h("div", { class: "node-head" },
      h("span", { class: "node-title", text: nodeLabel(node) }),
      h("code", { class: "short-id", text: node.short_id }), ...badges),
    node.is_client ? null : vramBar(node, segments, used),
    h("div", { class: "node-meta muted" }, vramText, served ? ` · serves ${served}` : ""),
    ...poolLines(node));
}

export function renderNodes() {
  $("node-list").replaceChildren(...allNodes().map(nodeItem));
}

function servedByText(model) {
  const names = (model.nodes || []).map((id) => {
    const node = nodeById(id);
    return node ? `${nodeLabel(node)} (${node.short_id})` : id.slice(0, SHORT_ID_CHARS);
  });
  return names.length ? `served by ${names.join(", ")}` : "";
}

const SPLIT_ROLES = ["split_host", "split_worker"];

// "split: alpha (host) 49% + bravo 51%": who holds which part of a model split across nodes.
function splitText(model) {
  const parts = (model.placements || []).filter((p) => SPLIT_ROLES.includes(p.role));
  if (!parts.length) return "";
  parts.sort((a, b) => SPLIT_ROLES.indexOf(a.role) - SPLIT_ROLES.indexOf(b.role));
  const names = parts.map((p) => {
    const node = nodeById(p.node_id);
    const served = node && (node.served || []).find((m) => m.model === model.model);
    const share = served && served.layer_share ? ` ${Math.round(served.layer_share * 100)}%` : "";
    const name = node ? nodeLabel(node) : p.node_id.slice(0, SHORT_ID_CHARS);
    return `${name}${p.role === "split_host" ? " (host)" : ""}${share}`;
  });
  return `split: ${names.join(" + ")}`;
}

function names(ids) {
  return ids.map((id) => {
    const node = nodeById(id);
    return node ? nodeLabel(node) : id.slice(0, SHORT_ID_CHARS);
  }).join(", ");
}

// "mesh: 24.0 req/min, 12.0 per server · could take it up: charlie".
function poolText(pool) {
  if (!pool) return "";
  const parts = [];
  if (pool.requests_per_min) {
    parts.push(`mesh: ${pool.requests_per_min.toFixed(1)} req/min, `
      + `${pool.requests_per_min_per_server.toFixed(1)} per server`);
  }
  if (pool.candidates && pool.candidates.length) parts.push(`could take it up: ${names(pool.candidates)}`);
  return parts.join(" · ");
}

export function renderModels() {
  const models = [...state.models.values()];
  $("models-empty").hidden = models.length > 0 || !state.self;
  const roles = new Map(state.roles.map((r) => [r.model, r]));
  const items = models.map((model) => {
    const role = roles.get(model.model);
    const rate = state.rates[model.model];
    const pool = state.pool.get(model.model);
    const dot = h("span", { class: "swatch" });
    dot.style.background = modelColor(model.model);
    const meta = [
      model.kind && model.kind !== "unknown" && model.kind !== "chat" ? model.kind : "",
      model.context_tokens ? `${model.context_tokens.toLocaleString("en")}-token context` : "",
      servedByText(model),
      splitText(model),
      role ? `here: ${role.role.replace(/_/g, " ")}` : "",
      rate ? `${rate.toFixed(1)} req/min from here` : "",
      poolText(pool),
    ].filter(Boolean).join(" · ");
    return h("li", { class: "model-item", "data-model": model.model, "data-state": model.state },
      h("div", { class: "model-head" }, dot, h("span", { class: "model-name", text: model.model }),
        h("span", { class: `state state-${model.state}`, text: STATE_LABELS[model.state] || model.state })),
      meta ? h("div", { class: "model-meta muted", text: meta }) : null,
      model.detail && model.state !== "ready" ? h("div", { class: "model-detail", text: model.detail }) : null,
      pool && pool.reasons && pool.reasons.length
        ? h("div", { class: "model-pool muted", text: pool.reasons.join("; ") }) : null);
  });
  $("model-list").replaceChildren(...items);
}

export function renderInvite() {
  const token = $("invite-token");
  if (state.tokenHidden) {
    token.textContent = HIDDEN_TOKEN_TEXT;
  } else {
    token.textContent = state.token || "(the mesh service is not answering)";
  }
  token.classList.toggle("muted", !state.token);
  $("copy-token").disabled = !state.token;
  $("join-cmd").textContent = `mesh-llm --join ${state.token || "<token>"}`;
}

export function renderLog() {
  const items = state.log.map((entry) => h("li", { class: `log-${entry.kind}` },
    h("time", { text: entry.at.toLocaleTimeString([], { hour12: false }) }), " ", entry.text));
  if (!items.length) items.push(h("li", { class: "muted", text: "Joins, leaves, plans, pool changes and model state show up here." }));
  $("event-log").replaceChildren(...items);
}

export function wireCopy() {
  const button = $("copy-token");
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(state.token);
    } catch {
      // No clipboard API outside a secure context (a console reached over plain HTTP from another
      // machine): select the token and use the legacy copy command instead.
      const range = document.createRange();
      range.selectNodeContents($("invite-token"));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      document.execCommand("copy");
    }
    button.textContent = "Copied ✓";
    setTimeout(() => { button.textContent = "Copy"; }, COPIED_FEEDBACK_MS);
  });
}

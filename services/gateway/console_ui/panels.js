// The page's lists: header and banner, nodes with VRAM bars, models with state, invite, activity.

import { $, fmtBytes, h, plural } from "./dom.js";
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
  ];
  const vramText = node.is_client ? "API-only client, no GPU share"
    : `${fmtBytes(used)} of ${fmtBytes(node.vram_bytes)} in use`;
  const served = (node.served || []).map((m) => `${m.model} (${m.role.replace("_", " ")})`).join(", ");
  return h("li", { class: "node-item", "data-node-id": node.node_id },
    h("div", { class: "node-head" },
      h("span", { class: "node-title", text: nodeLabel(node) }),
      h("code", { class: "short-id", text: node.short_id }), ...badges),
    node.is_client ? null : vramBar(node, segments, used),
    h("div", { class: "node-meta muted" }, vramText, served ? ` · serves ${served}` : ""));
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

export function renderModels() {
  const models = [...state.models.values()];
  $("models-empty").hidden = models.length > 0 || !state.self;
  const roles = new Map(state.roles.map((r) => [r.model, r]));
  const items = models.map((model) => {
    const role = roles.get(model.model);
    const rate = state.rates[model.model];
    const dot = h("span", { class: "swatch" });
    dot.style.background = modelColor(model.model);
    const meta = [
      servedByText(model),
      splitText(model),
      role ? `here: ${role.role.replace(/_/g, " ")}` : "",
      rate ? `${rate.toFixed(1)} req/min` : "",
    ].filter(Boolean).join(" · ");
    return h("li", { class: "model-item", "data-model": model.model, "data-state": model.state },
      h("div", { class: "model-head" }, dot, h("span", { class: "model-name", text: model.model }),
        h("span", { class: `state state-${model.state}`, text: STATE_LABELS[model.state] || model.state })),
      meta ? h("div", { class: "model-meta muted", text: meta }) : null,
      model.detail && model.state !== "ready" ? h("div", { class: "model-detail", text: model.detail }) : null);
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
  if (!items.length) items.push(h("li", { class: "muted", text: "Joins, leaves, plans and model state show up here." }));
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

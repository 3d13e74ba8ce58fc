// mesh-llm console: one EventSource (/api/events) keeps the page live, without polling; the chat
// posts to /v1 on this origin. Plain ES modules, no framework, no build step, nothing from a CDN.

import { renderPicker, wireChat } from "./chat.js";
import { renderHeader, renderInvite, renderLog, renderModels, renderNodes, wireCopy } from "./panels.js";
import { allNodes, applySnapshot, handlers, logLine, nodeLabel, state } from "./state.js";
import { plural } from "./dom.js";
import { renderTopology } from "./topology.js";

const EVENTS_URL = "/api/events";
const RECONNECT_AFTER_CLOSED_MS = 3000;
const RENDER_DELAY_MS = 16;

let renderPending = false;

// Events come in bursts (a mesh forming); one render per frame is plenty.
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  setTimeout(() => { renderPending = false; render(); }, RENDER_DELAY_MS);
}

function render() {
  renderHeader();
  renderTopology();
  renderNodes();
  renderModels();
  renderPicker();
  renderInvite();
  renderLog();
}

function setConnected(connected) {
  state.connected = connected;
  if (connected) state.everConnected = true;
  scheduleRender();
}

function connect() {
  const source = new EventSource(EVENTS_URL);
  source.addEventListener("snapshot", (event) => {
    applySnapshot(JSON.parse(event.data));
    const verb = state.everConnected ? "reconnected" : "connected";
    logLine("info", `${verb} to ${nodeLabel(state.self)} — ${plural(allNodes().length, "node")} in the mesh`);
    setConnected(true);
  });
  for (const [kind, handle] of Object.entries(handlers)) {
    source.addEventListener(kind, (event) => {
      handle(JSON.parse(event.data));
      scheduleRender();
    });
  }
  source.onerror = () => {
    setConnected(false);
    // CLOSED: the browser gave up (the server answered with an error, e.g. too many streams).
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, RECONNECT_AFTER_CLOSED_MS);
  };
}

wireChat();
wireCopy();
window.addEventListener("resize", scheduleRender);
render();
connect();

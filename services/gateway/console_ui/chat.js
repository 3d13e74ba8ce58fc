// The built-in chat: POST /v1/chat/completions on this origin with stream:true (the console serves
// the same API app as :9337) and render each delta as it arrives.

import { $, h } from "./dom.js";
import { STATE_LABELS, state } from "./state.js";

const CHAT_URL = "/v1/chat/completions";
const CHAT_MAX_TOKENS = 1024;

const chat = { messages: [], busy: false, abort: null, chosen: "" };

export function renderPicker() {
  const picker = $("model-picker");
  // The chat box talks to chat models only: embedding and rerank models cannot answer it.
  const models = [...state.models.values()].filter((m) => !m.kind || m.kind === "chat" || m.kind === "unknown");
  const ready = models.filter((m) => m.state === "ready").map((m) => m.model);
  if (!ready.includes(chat.chosen)) chat.chosen = ready[0] || "";
  const options = models.map((m) => h("option", {
    value: m.model, disabled: m.state !== "ready", selected: m.model === chat.chosen,
    text: m.state === "ready" ? m.model : `${m.model} (${STATE_LABELS[m.state] || m.state})`,
  }));
  if (!options.length) options.push(h("option", { value: "", disabled: true, selected: true, text: "no models yet" }));
  // Rebuilt only when the choices change, so an open dropdown is not yanked away by every event.
  const signature = options.map((o) => `${o.value}|${o.disabled}|${o.selected}`).join(";");
  if (picker.dataset.signature !== signature) {
    picker.replaceChildren(...options);
    picker.dataset.signature = signature;
  }
  $("chat-send").disabled = !chat.busy && (!chat.chosen || !state.connected);
}

function addBubble(role, text) {
  $("chat-empty").hidden = true;
  const bubble = h("div", { class: `bubble bubble-${role}` }, h("div", { class: "bubble-text", text }));
  $("chat-log").append(bubble);
  scrollChat();
  return bubble;
}

function scrollChat() {
  const log = $("chat-log");
  log.scrollTop = log.scrollHeight;
}

/** The `data:` payloads of the complete lines in buffer.text; a partial last line stays there. */
function* sseData(buffer) {
  let cut;
  while ((cut = buffer.text.indexOf("\n")) >= 0) {
    const line = buffer.text.slice(0, cut).trim();
    buffer.text = buffer.text.slice(cut + 1);
    if (line.startsWith("data:")) yield line.slice("data:".length).trim();
  }
}

async function streamReply(model, bubble) {
  const started = performance.now();
  const progress = { firstAt: 0, chunks: 0, reply: "" };
  const text = bubble.querySelector(".bubble-text");
  const response = await fetch(CHAT_URL, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model, messages: chat.messages, stream: true, max_tokens: CHAT_MAX_TOKENS }),
    signal: chat.abort.signal,
  });
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new Error(body?.error?.message || `HTTP ${response.status}`);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const buffer = { text: "" };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer.text += decoder.decode(value, { stream: true });
    for (const payload of sseData(buffer)) {
      if (payload === "[DONE]") continue;
      const chunk = JSON.parse(payload);
      if (chunk.error) throw new Error(chunk.error.message || "the stream failed");
      const delta = chunk.choices?.[0]?.delta?.content || "";
      if (!delta) continue;
      progress.firstAt = progress.firstAt || performance.now();
      progress.chunks += 1;
      progress.reply += delta;
      text.textContent = progress.reply;
      scrollChat();
    }
  }
  const seconds = (performance.now() - progress.firstAt) / 1000;
  const rate = progress.chunks > 1 && seconds > 0 ? ` · ${(progress.chunks / seconds).toFixed(1)} tok/s` : "";
  const firstToken = progress.firstAt ? ` · first token ${Math.round(progress.firstAt - started)} ms` : "";
  $("chat-stats").textContent = `${model}${firstToken}${rate}`;
  return progress.reply;
}

async function send(prompt) {
  const model = chat.chosen;
  if (!model || !prompt.trim()) return;
  chat.messages.push({ role: "user", content: prompt });
  addBubble("user", prompt);
  const bubble = addBubble("assistant", "");
  bubble.classList.add("streaming");
  chat.busy = true;
  chat.abort = new AbortController();
  setSendButton();
  try {
    chat.messages.push({ role: "assistant", content: await streamReply(model, bubble) });
  } catch (error) {
    const stopped = error.name === "AbortError";
    bubble.classList.add(stopped ? "bubble-stopped" : "bubble-error");
    bubble.append(h("div", { class: "bubble-note", text: stopped ? "stopped" : `error: ${error.message}` }));
    chat.messages.push({ role: "assistant", content: bubble.querySelector(".bubble-text").textContent });
  } finally {
    bubble.classList.remove("streaming");
    chat.busy = false;
    chat.abort = null;
    setSendButton();
  }
}

function setSendButton() {
  const button = $("chat-send");
  button.textContent = chat.busy ? "Stop" : "Send";
  button.classList.toggle("btn-stop", chat.busy);
  renderPicker();
}

export function wireChat() {
  const input = $("chat-input");
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (chat.busy) { chat.abort.abort(); return; }
    const prompt = input.value;
    input.value = "";
    send(prompt);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("chat-form").requestSubmit();
    }
  });
  $("model-picker").addEventListener("change", (event) => { chat.chosen = event.target.value; });
  $("chat-clear").addEventListener("click", () => {
    if (chat.busy) chat.abort.abort();
    chat.messages = [];
    $("chat-log").replaceChildren($("chat-empty"));
    $("chat-empty").hidden = false;
    $("chat-stats").textContent = "";
  });
}

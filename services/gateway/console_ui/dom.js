// DOM helpers: elements are built with textContent and attributes only, never innerHTML, because
// node and model names come from other machines.

const SVG_NS = "http://www.w3.org/2000/svg";

export const $ = (id) => document.getElementById(id);

function setProps(el, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") el.textContent = value;
    else el.setAttribute(key, String(value));
  }
}

function build(el, props, children) {
  setProps(el, props);
  el.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/** An HTML element: h("li", {class: "x", text: "y"}, ...children). */
export const h = (tag, props, ...children) => build(document.createElement(tag), props, children);

/** An SVG element, same shape as h. */
export const s = (tag, props, ...children) => build(document.createElementNS(SVG_NS, tag), props, children);

export function fmtBytes(bytes) {
  if (!bytes) return "0 B";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
  return `${value >= 100 || unit === 0 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
}

export function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

export const plural = (count, noun) => `${count} ${noun}${count === 1 ? "" : "s"}`;

/** "37 s", "4 min 10 s", "1 h 5 min": how long a transfer still takes. */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const total = Math.max(0, Math.round(seconds));
  if (total < 60) return `${total} s`;
  const minutes = Math.floor(total / 60);
  if (minutes < 60) return `${minutes} min ${total % 60} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

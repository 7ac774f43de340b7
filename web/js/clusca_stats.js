// ComfyUI-ClusCa: the last run's ClusCa statistics, shown on the "Apply ClusCa" node.
//
// The server sends a "clusca.stats" websocket message after every sampling run with ClusCa
// (nodes/ui_stats.py). This extension shows it as a compact panel at the bottom of the node: full and
// cached steps, tokens recomputed per cached step, estimated speed-up, measured sampling time, cache memory.
// The panel updates on every run and is cleared when the node is bypassed or muted, and when a run
// finishes without the node taking part in it (neither executed nor served from ComfyUI's cache).
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

// the ClusCa nodes that show the panel: the basic and advanced nodes, and the deprecated Apply ClusCa
const NODE_TYPES = new Set(["ClusCa", "ClusCaAdvanced", "ApplyClusCa"]);
const EVENT = "clusca.stats";
const WIDGET = "clusca_stats";
const MODE_ALWAYS = 0;
const LINE_HEIGHT = 16;
const PADDING = 6;

function formatBytes(n) {
  if (typeof n !== "number" || !isFinite(n)) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

function formatSeconds(s) {
  if (typeof s !== "number" || !isFinite(s)) return null;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function formatTimes(x) {
  return typeof x === "number" && isFinite(x) ? `${x.toFixed(2)}x` : "?";
}

// The panel's lines for one run summary: [{text, color}]
export function statsLines(s) {
  const lines = [];
  const family = s.family ? `${s.family}: ` : "";
  lines.push({ text: `${family}${s.full_steps} full + ${s.cached_steps} cached of ${s.steps} steps` });
  // the speed-up controller: what was asked for and what the run reached (steps / full steps)
  if (typeof s.speedup_asked === "number") {
    lines.push({ text: `speed-up asked ${formatTimes(s.speedup_asked)}, reached ${formatTimes(s.speedup_reached)}` });
  }
  // --- generic block forecast (nodes/adapters/generic.py): models without a family description ---
  if (s.method && s.method !== "ClusCa") lines.push({ text: `method: ${s.method} (no clusters)`, color: "#c0c060" });
  // --- end generic block forecast ---
  const tokens = s.tokens_per_cached_step || {};
  const parts = Object.entries(tokens).map(([k, v]) => `${v} ${k}`);
  lines.push({ text: `tokens per cached step: ${parts.length ? parts.join(" + ") : "0 (forecast only)"}` });
  lines.push({
    text: `est. speed-up ${formatTimes(s.estimated_flops_speedup)} (schedule bound ${formatTimes(s.schedule_bound)})`,
  });
  const seconds = formatSeconds(s.sampling_seconds);
  lines.push({
    text: `${seconds ? `sampling ${seconds} · ` : ""}cache ${formatBytes(s.peak_cache_bytes)}`,
  });
  // verbose mode / adaptive schedule: the forecast error measured at the representatives, [step, position, error]
  const probes = (s.probe_errors || []).map((p) => p[2]).filter((e) => typeof e === "number" && isFinite(e));
  if (probes.length) {
    const mean = probes.reduce((a, b) => a + b, 0) / probes.length;
    const max = Math.max(...probes);
    lines.push({
      text: `forecast error at representatives: mean ${(100 * mean).toFixed(1)}%, max ${(100 * max).toFixed(1)}% ` +
        `(${probes.length} cached calls)`,
    });
  }
  if (s.disabled) lines.push({ text: `caching switched off: ${s.disabled}`, color: "#f0a030" });
  return lines;
}

// A node by execution id; ids of nodes inside subgraphs are paths ("12:5"). Falls back to the outermost
// node that exists (the subgraph node) when the path cannot be followed.
function findNode(id) {
  const graph = app.graph;
  if (!graph || id == null) return null;
  const parts = String(id).split(":");
  let node = graph.getNodeById(Number.isNaN(Number(parts[0])) ? parts[0] : Number(parts[0]));
  let found = node;
  for (const part of parts.slice(1)) {
    const inner = found?.subgraph?.getNodeById?.(Number.isNaN(Number(part)) ? part : Number(part));
    if (!inner) break;
    found = inner;
  }
  return found ?? node ?? null;
}

// every ClusCa node with its execution id (a path for nodes inside subgraphs)
function allClusCaNodes(graph = app.graph, prefix = "", out = []) {
  for (const node of graph?._nodes ?? graph?.nodes ?? []) {
    const execId = `${prefix}${node.id}`;
    if (NODE_TYPES.has(node.comfyClass) || NODE_TYPES.has(node.type)) out.push({ node, execId });
    if (node.subgraph) allClusCaNodes(node.subgraph, `${execId}:`, out);
  }
  return out;
}

// Two ways to show the panel, chosen by how the page renders nodes:
// - classic (LiteGraph canvas): a canvas widget that draws the panel in the node's widget area;
// - "Nodes 2.0" (frontends from 1.27 on, setting Comfy.VueNodes.Enabled; nodes are Vue components): a DOM widget,
//   an HTML panel in the node's own layout. Those frontends would also draw a canvas widget (inside a small
//   canvas of its own), but 1.32.9 lays that canvas over the node's last input and below the node's edge.
// If the rendering mode changes while a panel is shown, the panel is rebuilt in the other kind.
function vueNodesMode() {
  const liteGraph = window.LiteGraph ?? window.comfyAPI?.litegraph?.LiteGraph;
  if (typeof liteGraph?.vueNodesMode === "boolean") return liteGraph.vueNodesMode;
  try {
    return !!app.extensionManager?.setting?.get?.("Comfy.VueNodes.Enabled");
  } catch {
    return false;
  }
}

const PANEL_FILL = "#143c46"; // opaque, so that what is drawn is exactly this colour (the browser test looks for it)
const PANEL_STROKE = "#3aa6b9";
const TEXT_FIRST = "#e8f6f8";
const TEXT_OTHER = "#bfe3ea";

// grow the node to fit the panel (never narrower or shorter than the user made it); shrink it back after
function resize(node, grow) {
  const wanted = node.computeSize();
  const height = grow ? Math.max(node.size[1], wanted[1]) : wanted[1];
  node.setSize([Math.max(node.size[0], wanted[0]), height]);
  node.setDirtyCanvas?.(true, true);
  app.graph?.setDirtyCanvas?.(true, true);
}

function panelHeight(lines) {
  return lines.length ? lines.length * LINE_HEIGHT + 2 * PADDING : 0;
}

function makeCanvasWidget() {
  const widget = {
    name: WIDGET,
    type: "clusca_stats",
    kind: "canvas",
    value: "",
    serialize: false,
    options: { serialize: false },
    lines: [],
    promptId: null,
    drawCount: 0,
    computeSize(width) {
      return [width, panelHeight(this.lines)];
    },
    draw(ctx, drawNode, width, y) {
      if (drawNode.mode !== MODE_ALWAYS) {
        // bypassed or muted: its stats no longer describe what the graph does
        queueMicrotask(() => clearStats(drawNode));
        return;
      }
      if (!this.lines.length) return;
      const margin = 10;
      const h = panelHeight(this.lines);
      ctx.save();
      ctx.fillStyle = PANEL_FILL;
      ctx.strokeStyle = PANEL_STROKE;
      ctx.beginPath();
      if (ctx.roundRect) ctx.roundRect(margin, y, width - 2 * margin, h, 6);
      else ctx.rect(margin, y, width - 2 * margin, h);
      ctx.fill();
      ctx.stroke();
      ctx.font = "12px Arial";
      ctx.textAlign = "left";
      ctx.textBaseline = "middle";
      this.lines.forEach((line, i) => {
        ctx.fillStyle = line.color || (i === 0 ? TEXT_FIRST : TEXT_OTHER);
        const text = fitText(ctx, line.text, width - 2 * margin - 12);
        ctx.fillText(text, margin + 6, y + PADDING + LINE_HEIGHT * (i + 0.5));
      });
      ctx.restore();
      this.drawCount += 1;
      this.drawnText = this.lines.map((l) => l.text);
      this.drawnPromptId = this.promptId;
      // where it was drawn, in the node's coordinates (for the browser test)
      this.drawnBox = [margin, y, width - 2 * margin, h];
    },
    update(lines, promptId) {
      this.lines = lines;
      this.promptId = promptId;
      this.value = lines.map((l) => l.text).join("\n");
    },
  };
  return widget;
}

function makeDomWidget(node) {
  const element = document.createElement("div");
  element.className = "clusca-stats-panel";
  Object.assign(element.style, {
    boxSizing: "border-box",
    // never wider than the node (long lines end in an ellipsis): the text does not size the panel, so a node
    // keeps its width (Nodes 2.0 in frontend 1.32 would otherwise grow the widget row past the node's edge)
    width: "100%",
    maxWidth: "100%",
    contain: "inline-size",
    margin: "4px 0",
    padding: `${PADDING}px`,
    background: PANEL_FILL,
    border: `1px solid ${PANEL_STROKE}`,
    borderRadius: "6px",
    font: "12px Arial, sans-serif",
    lineHeight: `${LINE_HEIGHT}px`,
    color: TEXT_OTHER,
    whiteSpace: "nowrap",
    overflow: "hidden",
    pointerEvents: "none",
  });
  // the frontend may call these while addDOMWidget runs, before it returns the widget
  const shown = { lines: [] };
  const height = () => panelHeight(shown.lines) + 8;
  const widget = node.addDOMWidget(WIDGET, "clusca_stats", element, {
    serialize: false,
    hideOnZoom: false,
    getValue: () => shown.lines.map((l) => l.text).join("\n"),
    setValue: () => {},
    getMinHeight: height,
    getMaxHeight: height,
  });
  widget.serialize = false;
  widget.kind = "dom";
  widget.drawCount = 0;
  widget.computeSize = (width) => [width, height()];
  widget.update = (lines, promptId) => {
    shown.lines = lines;
    element.replaceChildren(
      ...lines.map((line, i) => {
        const div = document.createElement("div");
        div.textContent = line.text;
        div.style.color = line.color || (i === 0 ? TEXT_FIRST : TEXT_OTHER);
        div.style.overflow = "hidden";
        div.style.textOverflow = "ellipsis";
        return div;
      }),
    );
    element.dataset.promptId = promptId ?? "";
    widget.drawCount += 1;
    widget.drawnText = lines.map((l) => l.text);
    widget.drawnPromptId = promptId;
  };
  return widget;
}

function fitText(ctx, text, maxWidth) {
  if (ctx.measureText(text).width <= maxWidth) return text;
  let t = text;
  while (t.length > 1 && ctx.measureText(t + "…").width > maxWidth) t = t.slice(0, -1);
  return t + "…";
}

function findWidget(node) {
  return node.widgets?.find((w) => w.name === WIDGET) ?? null;
}

function removeWidget(node, widget) {
  if (typeof node.removeWidget === "function") node.removeWidget(widget);
  else {
    widget.onRemove?.();
    node.widgets.splice(node.widgets.indexOf(widget), 1);
  }
}

// nodes that show stats: watched for being bypassed, muted or removed, and for a change of the rendering mode
const showing = new Set();
let watchTimer = null;

function showStats(node, message) {
  const kind = vueNodesMode() ? "dom" : "canvas";
  let widget = findWidget(node);
  if (widget && widget.kind !== kind) {
    removeWidget(node, widget);
    widget = null;
  }
  if (!widget) widget = kind === "dom" ? makeDomWidget(node) : node.addCustomWidget(makeCanvasWidget());
  const lines = statsLines(message.summary || {});
  widget.update(lines, message.prompt_id ?? null);
  node.clusca_stats = { ...message, lines: lines.map((l) => l.text) };
  resize(node, true);
  widget.triggerDraw?.(); // a canvas widget drawn by a Vue node redraws only when asked
  showing.add(node);
  watchTimer ??= setInterval(watch, 250);
}

function clearStats(node) {
  delete node.clusca_stats;
  showing.delete(node);
  const widget = findWidget(node);
  if (!widget) return;
  removeWidget(node, widget);
  resize(node, false);
}

// A Vue-rendered node is not drawn by the canvas, so the canvas widget's draw() cannot notice a bypass there.
function watch() {
  for (const node of showing) {
    if (!node.graph || !node.clusca_stats) showing.delete(node);
    else if (node.mode !== MODE_ALWAYS) clearStats(node);
    else if (findWidget(node)?.kind !== (vueNodesMode() ? "dom" : "canvas")) showStats(node, node.clusca_stats);
  }
  if (!showing.size) {
    clearInterval(watchTimer);
    watchTimer = null;
  }
}

// which nodes took part in the prompt that is running (executed, or served from the cache)
const run = { promptId: null, seen: new Set() };

function remember(id) {
  if (id != null) run.seen.add(String(id));
}

// ComfyUI 0.3.75 serves the pack's web folder twice when pyproject.toml's [tool.comfy] web and the
// package's WEB_DIRECTORY both name it (once per name), so this file may be loaded twice: install once.
if (!window.ClusCaStats) install();

function install() {
  app.registerExtension({
    name: "ClusCa.RunStats",
    setup() {
      api.addEventListener(EVENT, ({ detail }) => {
        if (!detail || detail.node == null) return;
        remember(detail.node);
        const node = findNode(detail.node);
        if (node) showStats(node, detail);
      });
      api.addEventListener("execution_start", ({ detail }) => {
        run.promptId = detail?.prompt_id ?? null;
        run.seen = new Set();
        for (const { node } of allClusCaNodes()) if (node.mode !== MODE_ALWAYS) clearStats(node);
      });
      api.addEventListener("execution_cached", ({ detail }) => {
        for (const id of detail?.nodes ?? []) remember(id);
      });
      api.addEventListener("executing", ({ detail }) => {
        // the frontend passes the executing node's id (display node first); older ones the message body
        if (detail && typeof detail === "object") {
          remember(detail.node);
          remember(detail.display_node);
        } else {
          remember(detail);
        }
      });
      api.addEventListener("execution_success", ({ detail }) => {
        if (run.promptId && detail?.prompt_id && detail.prompt_id !== run.promptId) return;
        for (const { node, execId } of allClusCaNodes()) {
          if (node.mode !== MODE_ALWAYS || !run.seen.has(execId)) clearStats(node);
        }
      });
    },
  });

  // for tests and the browser console: the stats shown on every Apply ClusCa node
  window.ClusCaStats = {
    shown() {
      return allClusCaNodes().map(({ node, execId }) => {
        const widget = findWidget(node);
        return {
          id: execId,
          mode: node.mode,
          stats: node.clusca_stats ?? null,
          kind: widget?.kind ?? null, // "canvas" (drawn by the canvas widget) or "dom" (an HTML panel)
          drawn: widget?.drawnText ?? null,
          drawnPromptId: widget?.drawnPromptId ?? null,
          drawnBox: widget?.drawnBox ?? null,
          drawCount: widget?.drawCount ?? 0,
        };
      });
    },
    vueNodesMode,
  };
}

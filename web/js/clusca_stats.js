// ComfyUI-ClusCa: the last run's ClusCa statistics, drawn on the "Apply ClusCa" node.
//
// The server sends a "clusca.stats" websocket message after every sampling run with ClusCa
// (nodes/ui_stats.py). This extension shows it as a compact panel at the bottom of the node: full and
// cached steps, tokens recomputed per cached step, estimated speed-up, measured sampling time, cache memory.
// The panel updates on every run and is cleared when the node is bypassed or muted, and when a run
// finishes without the node taking part in it (neither executed nor served from ComfyUI's cache).
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const NODE_TYPE = "ApplyClusCa";
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

// every Apply ClusCa node with its execution id (a path for nodes inside subgraphs)
function allClusCaNodes(graph = app.graph, prefix = "", out = []) {
  for (const node of graph?._nodes ?? graph?.nodes ?? []) {
    const execId = `${prefix}${node.id}`;
    if (node.comfyClass === NODE_TYPE || node.type === NODE_TYPE) out.push({ node, execId });
    if (node.subgraph) allClusCaNodes(node.subgraph, `${execId}:`, out);
  }
  return out;
}

// grow the node to fit the panel (never narrower or shorter than the user made it); shrink it back after
function resize(node, grow) {
  const wanted = node.computeSize();
  const height = grow ? Math.max(node.size[1], wanted[1]) : wanted[1];
  node.setSize([Math.max(node.size[0], wanted[0]), height]);
  node.setDirtyCanvas?.(true, true);
  app.graph?.setDirtyCanvas?.(true, true);
}

function makeWidget(node) {
  const widget = {
    name: WIDGET,
    type: "clusca_stats",
    value: "",
    serialize: false,
    options: { serialize: false },
    lines: [],
    drawCount: 0,
    computeSize(width) {
      return [width, this.lines.length ? this.lines.length * LINE_HEIGHT + 2 * PADDING : 0];
    },
    draw(ctx, drawNode, width, y) {
      if (drawNode.mode !== MODE_ALWAYS) {
        // bypassed or muted: its stats no longer describe what the graph does
        queueMicrotask(() => clearStats(drawNode));
        return;
      }
      if (!this.lines.length) return;
      const margin = 10;
      const h = this.lines.length * LINE_HEIGHT + 2 * PADDING;
      ctx.save();
      ctx.fillStyle = "rgba(20, 60, 70, 0.85)";
      ctx.strokeStyle = "#3aa6b9";
      ctx.beginPath();
      if (ctx.roundRect) ctx.roundRect(margin, y, width - 2 * margin, h, 6);
      else ctx.rect(margin, y, width - 2 * margin, h);
      ctx.fill();
      ctx.stroke();
      ctx.font = "12px Arial";
      ctx.textAlign = "left";
      ctx.textBaseline = "middle";
      this.lines.forEach((line, i) => {
        ctx.fillStyle = line.color || (i === 0 ? "#e8f6f8" : "#bfe3ea");
        const text = fitText(ctx, line.text, width - 2 * margin - 12);
        ctx.fillText(text, margin + 6, y + PADDING + LINE_HEIGHT * (i + 0.5));
      });
      ctx.restore();
      this.drawCount += 1;
      this.drawnText = this.lines.map((l) => l.text);
    },
  };
  return widget;
}

function fitText(ctx, text, maxWidth) {
  if (ctx.measureText(text).width <= maxWidth) return text;
  let t = text;
  while (t.length > 1 && ctx.measureText(t + "…").width > maxWidth) t = t.slice(0, -1);
  return t + "…";
}

function showStats(node, message) {
  let widget = node.widgets?.find((w) => w.name === WIDGET);
  if (!widget) widget = node.addCustomWidget(makeWidget(node));
  widget.lines = statsLines(message.summary || {});
  widget.value = widget.lines.map((l) => l.text).join("\n");
  node.clusca_stats = { ...message, lines: widget.value.split("\n") };
  resize(node, true);
}

function clearStats(node) {
  const index = node.widgets?.findIndex((w) => w.name === WIDGET) ?? -1;
  delete node.clusca_stats;
  if (index < 0) return;
  const widget = node.widgets[index];
  if (typeof node.removeWidget === "function") node.removeWidget(widget);
  else node.widgets.splice(index, 1);
  resize(node, false);
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
        const widget = node.widgets?.find((w) => w.name === WIDGET);
        return {
          id: execId,
          mode: node.mode,
          stats: node.clusca_stats ?? null,
          drawn: widget?.drawnText ?? null,
          drawCount: widget?.drawCount ?? 0,
        };
      });
    },
  };
}

"""Run statistics for the ComfyUI page: after every sampling run with ClusCa, the run's summary goes to the
browser over ComfyUI's own websocket (``PromptServer.send_sync``), where ``web/js/clusca_stats.js`` draws it
on the ``Apply ClusCa`` node.

The listener is a no-op without a running server (tests, scripts that import ComfyUI as a library): it only
looks at an already imported ``server`` module and its ``PromptServer.instance``, and imports nothing itself.
"""

from __future__ import annotations

import logging
import math
import sys
import time

log = logging.getLogger("ClusCa")

#: the websocket message type the frontend extension listens to
EVENT = "clusca.stats"


def json_safe(value):
    """The summary as plain JSON values: no tensors, no NaN/inf (the browser's JSON.parse refuses them)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return json_safe(item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(value)


def prompt_server():
    """ComfyUI's running ``PromptServer``, or None (no server in this process)."""
    server_module = sys.modules.get("server")
    cls = getattr(server_module, "PromptServer", None)
    return getattr(cls, "instance", None)


def executing_context():
    """(prompt id, node id) of the node ComfyUI is executing now (the sampler), or (None, None)."""
    try:
        from comfy_execution.utils import get_executing_context
        ctx = get_executing_context()
    except ImportError:
        ctx = None
    return (ctx.prompt_id, ctx.node_id) if ctx is not None else (None, None)


def stats_message(template, summary: dict) -> dict:
    """The message body: the Apply ClusCa node, the prompt and sampler node of the run, and its summary."""
    node_id = summary.get("node_id") or getattr(template, "node_id", None)
    prompt_id, sampler_node = executing_context()
    return {
        "node": None if node_id is None else str(node_id),
        "prompt_id": prompt_id,
        "sampler_node": sampler_node,
        "summary": json_safe(summary),
        "timestamp": int(time.time() * 1000),
    }


def send_stats(template, summary: dict) -> bool:
    """Send a run's summary to the page that queued the prompt (called at the end of every run). True when
    sent."""
    ps = prompt_server()
    if ps is None or not callable(getattr(ps, "send_sync", None)) or getattr(ps, "loop", None) is None:
        return False
    message = stats_message(template, summary)
    if message["node"] is None:
        return False
    ps.send_sync(EVENT, message, getattr(ps, "client_id", None))
    return True

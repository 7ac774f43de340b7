"""UI-format ComfyUI workflows (what the page saves) to API-format prompts (what ``POST /prompt`` takes).

The conversion follows what the frontend's ``graphToPrompt`` does, driven by the node definitions
(``/object_info``, or :func:`object_info_in_process` with the pack loaded into ComfyUI):

- widget values are matched to inputs in the node class's input order (required, then optional), the way
  the frontend creates widgets; an INT with ``control_after_generate`` (and, like the frontend, an INT named
  ``seed`` / ``noise_seed`` without an explicit ``false``) and a COMBO with it carry one extra value (the
  "control after generate" mode), which is skipped; so is the upload button's value after an
  ``image_upload`` / ``video_upload`` / ``audio_upload`` combo in older workflows; an input of several types
  with a ``widgetType`` (``io.MultiType``) is that widget; a dynamic combo (``COMFY_DYNAMICCOMBO_V3``, ComfyUI
  0.33) is its choice followed by the widgets of the chosen option, which go to the prompt as
  ``<combo>.<input>``; inputs marked ``hidden`` get no widget;
- an input with a link (a widget converted to an input, or a socket) takes the link instead;
- ``Note`` / ``MarkdownNote`` nodes are dropped; ``Reroute`` nodes are followed to their source;
  ``PrimitiveNode`` values are written into the inputs they feed;
- muted nodes (mode 2) are dropped with their links; bypassed nodes (mode 4) are bridged: an output takes the
  input of the same type (same slot first), as the frontend does.

Subgraphs are not supported (none of the shipped workflows use them): they raise :class:`WorkflowError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4
FRONTEND_ONLY = {"Note", "MarkdownNote"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
#: the pack's nodes that put ClusCa on a model (the deprecated ApplyClusCa included)
CLUSCA_NODE_TYPES = ("ClusCa", "ClusCaAdvanced", "ApplyClusCa")
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")


class WorkflowError(ValueError):
    """A workflow that cannot be converted (unknown node type, broken link, unsupported feature)."""


def load_workflow(path: Union[str, Path]) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


_ALL_LOADED = False


def load_all_nodes() -> None:
    """Load into this process what the server loads: ComfyUI's core and ``comfy_extras`` nodes and this pack
    (through ComfyUI's node loader). ``comfy_extras`` files whose optional dependencies are missing here
    (kornia, spandrel, torchaudio) are skipped by ComfyUI itself, as on a server without them."""
    global _ALL_LOADED
    if _ALL_LOADED:
        return
    import asyncio
    import sys

    from .comfy_env import COMFY_DIR, bootstrap, load_pack
    bootstrap()
    if "server" not in sys.modules:
        # nodes.py puts comfy/ first on sys.path, so a later ``import utils.install_util`` (server.py, imported
        # by some comfy_extras files) finds comfy/utils.py; import ComfyUI's utils package first, as main.py does
        stray = sys.modules.get("utils")
        if stray is not None and not hasattr(stray, "__path__"):
            del sys.modules["utils"]
        sys.path.insert(0, str(COMFY_DIR))
        try:
            import utils.install_util  # noqa: F401
            import server  # noqa: F401
        finally:
            sys.path.remove(str(COMFY_DIR))
    import nodes
    asyncio.run(nodes.init_builtin_extra_nodes())
    load_pack()
    _ALL_LOADED = True


def object_info_in_process(names=None) -> dict:
    """``/object_info`` for the node classes loaded into this process (ComfyUI's ``nodes`` module)."""
    import nodes
    from comfy_api.internal import _ComfyNodeInternal
    out = {}
    for name in names if names is not None else list(nodes.NODE_CLASS_MAPPINGS):
        cls = nodes.NODE_CLASS_MAPPINGS.get(name)
        if cls is None:
            continue
        if isinstance(cls, type) and issubclass(cls, _ComfyNodeInternal):
            out[name] = cls.GET_NODE_INFO_V1()
        else:
            types = cls.INPUT_TYPES()
            out[name] = {"input": types, "input_order": {k: list(v.keys()) for k, v in types.items()},
                         "output": list(cls.RETURN_TYPES), "name": name,
                         "output_name": list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES),
                         "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}
    return out


def _links(workflow: dict) -> dict:
    """link id -> (origin id, origin slot, target id, target slot, type); both serialisations."""
    out = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            out[link["id"]] = (link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"],
                               link.get("type"))
        else:
            lid, oid, oslot, tid, tslot, typ = link[:6]
            out[lid] = (oid, oslot, tid, tslot, typ)
    return out


def input_specs(info: dict) -> list:
    """[(name, type, options, optional)] in the order the frontend creates the node's inputs."""
    inputs = info.get("input") or {}
    order = info.get("input_order") or {k: list(v.keys()) for k, v in inputs.items() if isinstance(v, dict)}
    out = []
    for section in ("required", "optional"):
        spec = inputs.get(section) or {}
        for name in order.get(section) or list(spec):
            if name not in spec:
                continue
            entry = spec[name]
            typ = entry[0] if isinstance(entry, (list, tuple)) and entry else entry
            opts = entry[1] if isinstance(entry, (list, tuple)) and len(entry) > 1 and isinstance(entry[1], dict) else {}
            out.append((name, "COMBO" if isinstance(typ, (list, tuple)) else str(typ), opts, section == "optional"))
    return out


def is_widget(typ: str, opts: dict) -> bool:
    if opts.get("forceInput") or opts.get("hidden"):
        return False
    return typ in WIDGET_TYPES or typ == DYNAMIC_COMBO or opts.get("widgetType") in WIDGET_TYPES


def widget_kind(typ: str, opts: dict) -> str:
    """The widget type an input gets (``FLOAT`` for a ``FLOAT,INT`` input with ``widgetType`` FLOAT)."""
    return typ if typ in WIDGET_TYPES or typ == DYNAMIC_COMBO else opts.get("widgetType", typ)


def option_specs(section_inputs: dict) -> list:
    """[(name, type, options, optional)] of a dynamic combo option's inputs (required, then optional)."""
    return input_specs({"input": section_inputs or {}})


def dynamic_option(opts: dict, key) -> Optional[dict]:
    """The option of a dynamic combo with this key (None when there is none)."""
    for option in opts.get("options") or []:
        if isinstance(option, dict) and option.get("key") == key:
            return option
    return None


def has_control_widget(name: str, typ: str, opts: dict) -> bool:
    typ = widget_kind(typ, opts)
    if typ == "INT":
        flag = opts.get("control_after_generate")
        return bool(flag) if flag is not None else name in ("seed", "noise_seed")
    if typ == "COMBO":
        return bool(opts.get("control_after_generate"))
    return False


def _take_widgets(specs: list, values: list, i: int, out: dict, prefix: str = "", skip_upload: bool = False) -> int:
    """Read the values of ``specs``' widgets from ``values`` starting at ``i`` into ``out``; the next index."""
    for name, typ, opts, _ in specs:
        if not is_widget(typ, opts):
            continue
        if i >= len(values):
            break
        value = values[i]
        out[prefix + name] = value
        i += 1
        if has_control_widget(name, typ, opts):
            i += 1
        if typ == DYNAMIC_COMBO:
            option = dynamic_option(opts, value)
            if option is not None:
                i = _take_widgets(option_specs(option.get("inputs")), values, i, out, f"{prefix}{name}.")
        elif skip_upload and typ == "COMBO" and any(opts.get(f) for f in UPLOAD_FLAGS) and i < len(values) \
                and values[i] in ("image", "video", "audio", None):
            i += 1
    return i


def widget_values_for(node: dict, specs: list) -> dict:
    """{input name: value} from the node's ``widgets_values`` (list or dict form)."""
    values = node.get("widgets_values")
    if values is None:
        return {}
    widgets = [s for s in specs if is_widget(s[1], s[2])]
    if isinstance(values, dict):
        return {name: values[name] for name, *_ in widgets if name in values}
    counted: dict = {}
    expected = _take_widgets(specs, list(values) + [None] * 64, 0, counted)
    out: dict = {}
    _take_widgets(specs, values, 0, out, skip_upload=len(values) > expected)
    return out


def workflow_to_prompt(workflow: dict, object_info: dict, modes: Optional[dict] = None) -> dict:
    """The API prompt of a UI workflow. ``modes`` overrides node modes by id (e.g. ``{5: MODE_BYPASS}``)."""
    if (workflow.get("definitions") or {}).get("subgraphs"):
        raise WorkflowError("workflows with subgraphs are not supported by this converter")
    nodes = {n["id"]: dict(n) for n in workflow.get("nodes") or []}
    for nid, mode in (modes or {}).items():
        nodes[int(nid) if str(nid).isdigit() else nid]["mode"] = mode
    links = _links(workflow)
    unknown = sorted({n["type"] for n in nodes.values()
                      if n["type"] not in object_info and n["type"] not in FRONTEND_ONLY
                      and n["type"] not in ("Reroute", "PrimitiveNode")})
    if unknown:
        raise WorkflowError(f"unknown node types (not loaded in this ComfyUI): {', '.join(unknown)}")

    def input_link(node: dict, name: Optional[str] = None, slot: Optional[int] = None):
        for i, inp in enumerate(node.get("inputs") or []):
            if (name is not None and inp.get("name") == name) or (slot is not None and i == slot):
                return inp.get("link")
        return None

    def resolve(link_id, seen=()):
        """(origin node id, slot) feeding ``link_id`` after Reroutes and bypasses; None when muted or
        dangling; ("value", v) for a PrimitiveNode."""
        if link_id is None:
            return None
        if link_id not in links:
            raise WorkflowError(f"link {link_id} does not exist")
        oid, oslot, _tid, _tslot, typ = links[link_id]
        if oid in seen:
            raise WorkflowError(f"link cycle through node {oid}")
        origin = nodes.get(oid)
        if origin is None:
            raise WorkflowError(f"link {link_id} comes from node {oid}, which does not exist")
        mode = origin.get("mode", MODE_ALWAYS)
        if origin["type"] == "Reroute":
            return resolve(input_link(origin, slot=0), seen + (oid,))
        if origin["type"] == "PrimitiveNode":
            vals = origin.get("widgets_values") or []
            return ("value", vals[0]) if vals else None
        if mode == MODE_NEVER:
            return None
        if mode == MODE_BYPASS:
            ins = origin.get("inputs") or []
            out_type = ((origin.get("outputs") or [{}])[oslot] if oslot < len(origin.get("outputs") or []) else {}).get("type", typ)
            candidates = ([oslot] if oslot < len(ins) else []) + list(range(len(ins)))
            for i in candidates:
                if ins[i].get("type") == out_type and ins[i].get("link") is not None:
                    return resolve(ins[i]["link"], seen + (oid,))
            return None
        return (str(oid), oslot)

    prompt = {}
    for nid, node in nodes.items():
        typ = node["type"]
        if typ in FRONTEND_ONLY or typ in ("Reroute", "PrimitiveNode"):
            continue
        if node.get("mode", MODE_ALWAYS) in (MODE_NEVER, MODE_BYPASS):
            continue
        specs = input_specs(object_info[typ])
        inputs = widget_values_for(node, specs)
        for name, styp, opts, _optional in specs:
            link = input_link(node, name=name)
            if link is None:
                continue
            source = resolve(link)
            if source is None:
                inputs.pop(name, None) if not is_widget(styp, opts) else None
                continue
            inputs[name] = source[1] if source[0] == "value" else [source[0], source[1]]
        entry = {"class_type": typ, "inputs": inputs}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        prompt[str(nid)] = entry
    return prompt


def find_nodes(workflow: dict, node_type: str) -> list:
    return [n for n in workflow.get("nodes") or [] if n.get("type") == node_type]

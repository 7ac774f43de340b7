"""Writing UI-format workflows (the JSON the ComfyUI page saves and loads) from node definitions.

Used by ``devkit/make_workflows.py`` to generate the shipped example workflows: every node gets its sockets,
outputs and ``widgets_values`` in the order the frontend creates widgets (see ``devkit.workflow_api``), so the
files load in the page exactly like ones saved from it.
"""

from __future__ import annotations

import uuid
from typing import Optional, Union

from .workflow_api import (DYNAMIC_COMBO, dynamic_option, has_control_widget, input_specs, is_widget, option_specs,
                           widget_kind)

NOTE_COLOR, NOTE_BGCOLOR = "#432", "#653"


def default_value(name: str, typ: str, opts: dict, info: Optional[dict] = None):
    """The value the page gives a new widget: its default, else the first option / zero / empty."""
    if "default" in opts:
        return opts["default"]
    kind = widget_kind(typ, opts)
    if kind == "COMBO":
        options = opts.get("options")
        if options is None and info is not None:
            entry = info["input"].get("required", {}).get(name) or info["input"].get("optional", {}).get(name)
            options = entry[0] if entry and isinstance(entry[0], (list, tuple)) else []
        return options[0] if options else ""
    if kind == DYNAMIC_COMBO:
        options = opts.get("options") or []
        return options[0]["key"] if options else ""
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[kind]


def widget_values(name: str, typ: str, opts: dict, value=None, info: Optional[dict] = None) -> list:
    """The ``widgets_values`` entries of one widget input: its value, the "control after generate" mode where
    it has one, and for a dynamic combo the values of the chosen option's widgets (their defaults)."""
    if value is None:
        value = default_value(name, typ, opts, info)
    out = [value]
    if has_control_widget(name, typ, opts):
        out.append("fixed")
    if typ == DYNAMIC_COMBO:
        option = dynamic_option(opts, value)
        if option is None:
            raise KeyError(f"{name} has no option {value!r}")
        for sub, sub_typ, sub_opts, _ in option_specs(option.get("inputs")):
            if is_widget(sub_typ, sub_opts):
                out.extend(widget_values(sub, sub_typ, sub_opts))
    return out


class Node:
    def __init__(self, wf: "UIWorkflow", data: dict, info: Optional[dict]):
        self.wf, self.data, self.info = wf, data, info

    @property
    def id(self) -> int:
        return self.data["id"]

    def output_slot(self, output: Union[int, str]) -> int:
        if isinstance(output, int):
            return output
        for i, o in enumerate(self.data["outputs"]):
            if o["name"] == output or o["type"] == output:
                return i
        raise KeyError(f"{self.data['type']} has no output {output!r}")


class UIWorkflow:
    def __init__(self, object_info: dict, workflow_id: Optional[str] = None):
        self.object_info = object_info
        self.nodes: list = []
        self.links: list = []
        self.groups: list = []
        self.id = workflow_id or str(uuid.uuid4())

    def add(self, node_type: str, pos, widgets: Optional[dict] = None, title: Optional[str] = None,
            size=None, mode: int = 0, models: Optional[list] = None, color=None, bgcolor=None) -> Node:
        info = self.object_info.get(node_type)
        if info is None:
            raise KeyError(f"unknown node type {node_type}")
        widgets = dict(widgets or {})
        specs = input_specs(info)
        inputs, values = [], []
        for name, typ, opts, _optional in specs:
            if opts.get("hidden"):
                continue   # no widget and no socket on the page
            if is_widget(typ, opts):
                given = widgets.pop(name) if name in widgets else None
                values.extend(widget_values(name, typ, opts, given, info))
            else:
                inputs.append({"name": name, "type": typ, "link": None})
        if widgets:
            raise KeyError(f"{node_type} has no widget inputs {sorted(widgets)}")
        names = info.get("output_name") or info.get("output") or []
        outputs = [{"name": str(n), "type": str(t), "links": []} for n, t in zip(names, info.get("output") or [])]
        n_rows = max(len(inputs), len(outputs))
        data = {
            "id": len(self.nodes) + 1, "type": node_type, "pos": list(pos),
            "size": list(size) if size else [320, 46 + 22 * n_rows + 26 * len(values)],
            "flags": {}, "order": len(self.nodes), "mode": mode, "inputs": inputs, "outputs": outputs,
            "properties": {"Node name for S&R": node_type}, "widgets_values": values,
        }
        if models:
            data["properties"]["models"] = models
        if title:
            data["title"] = title
        if color:
            data["color"], data["bgcolor"] = color, bgcolor or color
        node = Node(self, data, info)
        self.nodes.append(node)
        return node

    def note(self, text: str, pos, size=(420, 260), title: Optional[str] = None) -> Node:
        data = {"id": len(self.nodes) + 1, "type": "Note", "pos": list(pos), "size": list(size), "flags": {},
                "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                "widgets_values": [text], "color": NOTE_COLOR, "bgcolor": NOTE_BGCOLOR}
        if title:
            data["title"] = title
        node = Node(self, data, None)
        self.nodes.append(node)
        return node

    def link(self, src: Node, output: Union[int, str], dst: Node, input_name: str) -> int:
        slot = src.output_slot(output)
        typ = src.data["outputs"][slot]["type"]
        for i, inp in enumerate(dst.data["inputs"]):
            if inp["name"] == input_name:
                if inp["type"] != typ and "*" not in (inp["type"], typ):
                    raise TypeError(f"{src.data['type']}.{output} ({typ}) -> {dst.data['type']}.{input_name} "
                                    f"({inp['type']})")
                link_id = len(self.links) + 1
                inp["link"] = link_id
                src.data["outputs"][slot]["links"].append(link_id)
                self.links.append([link_id, src.id, slot, dst.id, i, typ])
                return link_id
        raise KeyError(f"{dst.data['type']} has no input socket {input_name!r}")

    def group(self, title: str, bounding, color="#3f789e") -> None:
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": list(bounding), "color": color,
                            "font_size": 24, "flags": {}})

    def to_json(self) -> dict:
        # execution order: a node after everything it takes input from
        order, done = [], set()
        by_id = {n.id: n for n in self.nodes}
        deps = {n.id: {lk[1] for lk in self.links if lk[3] == n.id} for n in self.nodes}

        def visit(nid, stack=()):
            if nid in done:
                return
            for d in sorted(deps[nid]):
                if d not in stack:
                    visit(d, stack + (nid,))
            done.add(nid)
            order.append(nid)
        for n in self.nodes:
            visit(n.id)
        for i, nid in enumerate(order):
            by_id[nid].data["order"] = i
        return {
            "id": self.id, "revision": 0,
            "last_node_id": len(self.nodes), "last_link_id": len(self.links),
            "nodes": [n.data for n in self.nodes], "links": self.links, "groups": self.groups,
            "config": {}, "extra": {"ds": {"scale": 0.7, "offset": [70, 120]}}, "version": 0.4,
        }

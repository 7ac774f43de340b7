"""ComfyUI side of the pack: nodes, wrappers and model-family adapters (imports ComfyUI)."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .apply_clusca import ApplyClusCa
from .clusca_nodes import ClusCa, ClusCaAdvanced
from .cluster_map import ClusCaClusterMap
from .dit.labels import ClusCaDiTClassLabel
from .dit.loader import ClusCaDiTLoader
from .reference.nodes import NODES as REFERENCE_NODES

NODES: list[type[io.ComfyNode]] = [ClusCa, ClusCaAdvanced, ApplyClusCa, ClusCaClusterMap, ClusCaDiTLoader,
                                   ClusCaDiTClassLabel]
NODES += REFERENCE_NODES


class ClusCaExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> ClusCaExtension:
    return ClusCaExtension()

"""The ``ClusCaClusterMap`` node: which image tokens ClusCa grouped together in the last sampling run.

ClusCa clusters the image tokens with K-means at every full step and refreshes one token per cluster on the
cached steps. The node draws the clustering of the run's last full step (first batch element, first
conditioning) as one flat colour per cluster at token resolution, upscaled with nearest-neighbour sampling to
the size of the decoded image. Video models give one map per frame.
"""

from __future__ import annotations

import colorsys
import math
from typing import Optional

import torch
from comfy_api.latest import io

from .holder import KEY, ClusCaHolder

#: pixels per latent pixel when no image gives the size (the VAEs of FLUX, HunyuanVideo and SD 1.x)
DEFAULT_SCALE = 8
DEFAULT_SIZE = 512


class ClusterMapError(ValueError):
    """No cluster map can be drawn for this model (no ClusCa, or no run yet); the message says what to do."""


def cluster_snapshot(plan) -> Optional[dict]:
    """The image-token clusters a full call just made (first conditioning, first batch row), on the CPU, with
    the token grid: what the map draws. None when the call clustered nothing."""
    assignment = plan.slots[0].clusters.get("img") if plan.slots else None
    if assignment is None:
        return None
    offset = int(plan.extras.get("image_token_offset", 0))
    n = None if plan.grid is None else plan.grid[0] * plan.grid[1] * plan.grid[2]
    labels = assignment.labels[0, offset:None if n is None else offset + n]
    return {"labels": labels.detach().cpu(), "grid": plan.grid, "num_clusters": assignment.num_clusters,
            "step": plan.step}


def find_clusters(model) -> dict:
    """The cluster snapshot of the last run made with ``model`` (or with a clone of it made afterwards, e.g.
    by a LoRA loader placed after Apply ClusCa)."""
    to = (getattr(model, "model_options", None) or {}).get("transformer_options") or {}
    holder = to.get(KEY)
    if not isinstance(holder, ClusCaHolder):
        raise ClusterMapError("this model has no ClusCa: connect the MODEL output of 'Apply ClusCa' (the model "
                              "the sampler used)")
    clusters = holder.last_clusters if holder.last_clusters is not None else holder.descendant_clusters
    if clusters is None:
        if holder.config.clusters <= 0:
            raise ClusterMapError("Apply ClusCa has clusters = 0 (plain TaylorSeer): there are no clusters to show")
        raise ClusterMapError("no sampling run with this ClusCa model has clustered its tokens yet: connect the "
                              "sampler's LATENT output to 'samples' so that the map runs after the sampler")
    return clusters


def cluster_colors(n: int) -> torch.Tensor:
    """(n, 3) RGB colours in [0, 1], far apart for neighbouring ids (golden-ratio hue walk, three tones)."""
    out = torch.empty(max(n, 1), 3)
    for i in range(max(n, 1)):
        hue = (i * 0.618033988749895) % 1.0
        sat, val = ((0.65, 0.95), (0.9, 0.75), (0.45, 0.85))[i % 3]
        out[i] = torch.tensor(colorsys.hsv_to_rgb(hue, sat, val))
    return out


def _frame_index(frames_out: int, frames_grid: int) -> list:
    """For every output frame, the token-grid frame it shows. A causal video VAE decodes latent frame 0 to
    one frame and every later latent frame to ``r`` frames (1 + r (F - 1) frames in all)."""
    if frames_grid <= 1:
        return [0] * frames_out
    if frames_out == frames_grid:
        return list(range(frames_out))
    r = (frames_out - 1) / (frames_grid - 1)
    if r >= 1 and r == int(r):
        return [min(frames_grid - 1, math.ceil(j / r)) for j in range(frames_out)]
    return [min(frames_grid - 1, int(j * frames_grid / frames_out)) for j in range(frames_out)]


def _default_size(samples) -> tuple:
    shape = getattr((samples or {}).get("samples") if isinstance(samples, dict) else None, "shape", None)
    if shape is None or len(shape) < 4:
        return DEFAULT_SIZE, DEFAULT_SIZE
    return int(shape[-2]) * DEFAULT_SCALE, int(shape[-1]) * DEFAULT_SCALE


def render_cluster_map(clusters: dict, height: int, width: int, frames: Optional[int] = None) -> torch.Tensor:
    """IMAGE (N, height, width, 3): the cluster of every token as a colour, nearest-upscaled. N is the token
    grid's frame count, or ``frames`` (the decoded video's frame count) when given."""
    labels = clusters["labels"].reshape(-1).long()
    grid = tuple(int(d) for d in (clusters.get("grid") or (1, 1, labels.numel())))
    f, rows, cols = (1,) * (3 - len(grid)) + grid if len(grid) < 3 else grid[-3:]
    if labels.numel() != f * rows * cols:
        raise ClusterMapError(f"the cluster snapshot has {labels.numel()} labels for a {f}x{rows}x{cols} token grid")
    n = int(clusters.get("num_clusters") or (int(labels.max()) + 1 if labels.numel() else 1))
    palette = cluster_colors(max(n, int(labels.max()) + 1 if labels.numel() else 1))
    tokens = palette[labels].reshape(f, rows, cols, 3)
    ys = torch.clamp((torch.arange(height) * rows) // height, max=rows - 1)
    xs = torch.clamp((torch.arange(width) * cols) // width, max=cols - 1)
    index = _frame_index(frames if frames else f, f)
    return tokens[index][:, ys][:, :, xs].contiguous()


class ClusCaClusterMap(io.ComfyNode):
    """Shows ClusCa's token clusters of the last sampling run as a colour map."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ClusCaClusterMap",
            display_name="ClusCa Cluster Map",
            category="ClusCa",
            description=("Shows how ClusCa grouped the image tokens in the last sampling run (K-means at the last "
                         "full step; first image of the batch): one colour per cluster at token resolution, "
                         "scaled to the image. On cached steps one token per cluster was recomputed and its "
                         "result shared with its cluster. Video models give one map per frame."),
            inputs=[
                io.Model.Input("model", tooltip="The model from 'Apply ClusCa' that the sampler used."),
                io.Latent.Input("samples", tooltip="The sampler's LATENT output: it makes this node run after the "
                                                   "sampler, and without an image it sets the map's size "
                                                   f"({DEFAULT_SCALE} pixels per latent pixel)."),
                io.Image.Input("image", optional=True,
                               tooltip="Optional: the decoded image or video; the map takes its size (and, for "
                                       "video, its frame count) so the two can be compared side by side."),
            ],
            outputs=[io.Image.Output(tooltip="The cluster map: one colour per cluster, one image per frame.")],
        )

    @classmethod
    def execute(cls, model, samples, image=None) -> io.NodeOutput:
        clusters = find_clusters(model)
        if image is not None:
            frames, height, width = int(image.shape[0]), int(image.shape[1]), int(image.shape[2])
        else:
            (height, width), frames = _default_size(samples), None
        return io.NodeOutput(render_cluster_map(clusters, height, width, frames))

"""Procedural training data for the reference models: coloured shapes on a dark gradient background, and
the same shapes moving in a straight line over several frames. Deterministic for a given generator.

Everything is drawn with anti-aliased signed-distance masks (about one pixel of soft edge), in torch,
for a whole batch at once. Pixels are RGB in [0, 1], images (B, 3, H, W), videos (B, 3, T, H, W).
"""

from __future__ import annotations

import math

import torch

SHAPES = ("circle", "square", "triangle", "ring")
COLOURS = {
    "red": (0.92, 0.16, 0.14),
    "green": (0.16, 0.78, 0.22),
    "blue": (0.18, 0.32, 0.96),
    "yellow": (0.96, 0.86, 0.14),
    "magenta": (0.86, 0.18, 0.86),
    "cyan": (0.14, 0.84, 0.90),
}
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
COLOUR_JITTER = 0.05


def _sdf(kind: torch.Tensor, px: torch.Tensor, py: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed distance (pixels, negative inside) of shape ``kind`` (index into SHAPES) centred at the origin
    with size ``r`` (circumradius-like), at offsets px, py. kind / r broadcast against px / py."""
    dist = torch.sqrt(px * px + py * py)
    circle = dist - r
    square = torch.maximum(px.abs(), py.abs()) - 0.8 * r
    # upward equilateral triangle with circumradius r about its centroid (y grows downwards)
    c30, s30 = math.cos(math.pi / 6), 0.5
    tri = torch.maximum(torch.maximum(py, c30 * px - s30 * py), -c30 * px - s30 * py) - 0.5 * r
    ring = (dist - 0.72 * r).abs() - 0.28 * r
    out = torch.where(kind == 0, circle, square)
    out = torch.where(kind == 2, tri, out)
    return torch.where(kind == 3, ring, out)


def draw(kind, colour_rgb, cx, cy, r, background, height, width) -> torch.Tensor:
    """One shape per image onto ``background`` (B, 3, H, W). kind (B,) long, colour_rgb (B, 3), cx/cy/r (B,)
    or (B, T) for videos (then the result is (B, 3, T, H, W))."""
    video = cx.ndim == 2
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    if video:
        shape = (-1, cx.shape[1], 1, 1)
        px = xs.view(1, 1, 1, -1) - cx.reshape(shape)
        py = ys.view(1, 1, -1, 1) - cy.reshape(shape)
        sd = _sdf(kind.view(-1, 1, 1, 1), px, py, r.view(-1, 1, 1, 1))          # (B, T, H, W)
        alpha = (0.5 - sd).clamp(0, 1).unsqueeze(1)                             # (B, 1, T, H, W)
        bg = background.unsqueeze(2)
        col = colour_rgb.view(-1, 3, 1, 1, 1)
    else:
        px = xs.view(1, 1, -1) - cx.view(-1, 1, 1)
        py = ys.view(1, -1, 1) - cy.view(-1, 1, 1)
        sd = _sdf(kind.view(-1, 1, 1), px, py, r.view(-1, 1, 1))
        alpha = (0.5 - sd).clamp(0, 1).unsqueeze(1)
        bg = background
        col = colour_rgb.view(-1, 3, 1, 1)
    return bg * (1 - alpha) + col * alpha


def backgrounds(batch, height, width, g) -> torch.Tensor:
    """Dark grey linear gradients in a random direction (levels 0.04-0.30), (B, 3, H, W)."""
    a = torch.rand(batch, generator=g) * 0.26 + 0.04
    b = torch.rand(batch, generator=g) * 0.26 + 0.04
    ang = torch.rand(batch, generator=g) * 2 * math.pi
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height - 0.5
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width - 0.5
    proj = xs.view(1, 1, -1) * torch.cos(ang).view(-1, 1, 1) + ys.view(1, -1, 1) * torch.sin(ang).view(-1, 1, 1)
    t = (proj / math.sqrt(0.5) + 0.5).clamp(0, 1)
    level = a.view(-1, 1, 1) * (1 - t) + b.view(-1, 1, 1) * t
    return level.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def colour_table() -> torch.Tensor:
    return torch.tensor(list(COLOURS.values()), dtype=torch.float32)


def sample_images(batch, size, g, r_range=(0.12, 0.30)):
    """(pixels (B, 3, S, S) in [0, 1], shape idx (B,), colour idx (B,)). Shape size r is a fraction of S;
    the shape lies fully inside the image."""
    kind = torch.randint(0, len(SHAPES), (batch,), generator=g)
    colour = torch.randint(0, len(COLOURS), (batch,), generator=g)
    rgb = (colour_table()[colour] + (torch.rand(batch, 3, generator=g) * 2 - 1) * COLOUR_JITTER).clamp(0, 1)
    r = (torch.rand(batch, generator=g) * (r_range[1] - r_range[0]) + r_range[0]) * size
    margin = r + 1.0
    cx = margin + torch.rand(batch, generator=g) * (size - 2 * margin)
    cy = margin + torch.rand(batch, generator=g) * (size - 2 * margin)
    pixels = draw(kind, rgb, cx, cy, r, backgrounds(batch, size, size, g), size, size)
    return pixels, kind, colour


def sample_videos(batch, size, frames, g, r_range=(0.12, 0.20), speed_range=(0.6, 1.2)):
    """(pixels (B, 3, T, S, S) in [0, 1], shape idx, colour idx, direction idx). The shape moves
    ``speed`` * S / 16 pixels per frame in one of DIRECTIONS and stays inside the frame throughout (the speed
    is capped where the frame is too small for the whole path)."""
    kind = torch.randint(0, len(SHAPES), (batch,), generator=g)
    colour = torch.randint(0, len(COLOURS), (batch,), generator=g)
    direction = torch.randint(0, len(DIRECTIONS), (batch,), generator=g)
    rgb = (colour_table()[colour] + (torch.rand(batch, 3, generator=g) * 2 - 1) * COLOUR_JITTER).clamp(0, 1)
    r = (torch.rand(batch, generator=g) * (r_range[1] - r_range[0]) + r_range[0]) * size
    speed = (torch.rand(batch, generator=g) * (speed_range[1] - speed_range[0]) + speed_range[0]) * size / 16
    dirs = torch.tensor(list(DIRECTIONS.values()), dtype=torch.float32)[direction]   # (B, 2)
    margin = r + 1.0
    speed = torch.minimum(speed, (size - 2 * margin) / max(frames - 1, 1))
    travel = speed * (frames - 1)
    # start anywhere such that start + travel * dir stays within [margin, size - margin] on both axes
    lo = margin.unsqueeze(1) + torch.clamp(-dirs, min=0) * travel.unsqueeze(1)
    hi = (size - margin).unsqueeze(1) - torch.clamp(dirs, min=0) * travel.unsqueeze(1)
    start = lo + torch.rand(batch, 2, generator=g) * (hi - lo).clamp(min=0)
    t = torch.arange(frames, dtype=torch.float32)
    cx = start[:, :1] + dirs[:, :1] * speed.unsqueeze(1) * t
    cy = start[:, 1:] + dirs[:, 1:] * speed.unsqueeze(1) * t
    pixels = draw(kind, rgb, cx, cy, r, backgrounds(batch, size, size, g), size, size)
    return pixels, kind, colour, direction

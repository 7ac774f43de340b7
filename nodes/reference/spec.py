"""What a ClusCa reference model is besides its weights: vocabulary, conditioning, latent mapping.

A reference model is a small diffusion transformer of one of the architectures ClusCa accelerates (FLUX,
HunyuanVideo, DiT, Qwen-Image, FLUX.2, Wan 2.1), trained by ``scripts/train_reference_models.py`` on
procedurally drawn coloured shapes (moving shapes for the video models). It has no VAE and no text encoder:

- **Latents** are an exactly invertible pixel mapping (:class:`PixelLatent`): RGB in [-1, 1] is folded with
  ``pixel_unshuffle`` (factor f: every f x f pixel block becomes 3 f^2 channels), zero channels are appended up
  to the latent format's channel count, and the result is taken as the *model-space* latent. The LATENT that
  ComfyUI's samplers return is ``latent_format.process_out`` of that (as for a VAE's latents), so decoding is
  ``process_in``, dropping the padding channels, ``pixel_shuffle``. Video frames are mapped one by one (one
  latent frame per video frame, no temporal compression). Image models whose latent format has a frame axis
  (Qwen-Image's Wan 2.1 latents, ``latent_dimensions == 3``) get latents with one frame, (B, C, 1, h, w), as
  ComfyUI's KSampler makes of an empty image latent for them.
- **Text** is a whitespace-separated prompt over a tiny vocabulary (e.g. "red circle",
  "blue square moving left"), padded with ``<pad>`` to a fixed length; :class:`TextEmbedder` turns it into
  the context tokens (a token table plus a position table) and, for the models that take one (FLUX,
  HunyuanVideo), the pooled vector (mean of a second table). The empty prompt (all ``<pad>``) is the
  unconditional input of CFG. The conditioning is what a text encoder node would give; the model's own
  ``extra_conds`` may still change it on the way in (FLUX.2 pads the text to 512 tokens), in sampling and in
  training alike.
- **DiT** is class-conditional: a prompt must name one of its classes ("red circle"); the empty prompt is
  the null class.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

PAD = "<pad>"
METADATA_KEY = "clusca_reference"
FORMAT_VERSION = 1
FAMILIES = ("flux", "hunyuan_video", "dit", "qwen_image", "flux2", "wan")
EMBEDDER_PREFIX = "conditioning."
MODEL_PREFIX = "diffusion_model."


class PromptError(ValueError):
    """A prompt a reference model cannot encode; the message lists what it understands."""


class TextEmbedder(nn.Module):
    """Prompt token ids (B, L) -> (context (B, L, context_dim), pooled (B, pooled_dim)).

    context = token table + position table (the models' text tokens carry no position of their own);
    pooled = mean over all L slots (padding included) of a second token table; ``pooled_dim`` 0: no pooled
    vector (None), for models that take none (Qwen-Image, FLUX.2, Wan)."""

    def __init__(self, vocab_size: int, text_len: int, context_dim: int, pooled_dim: int):
        super().__init__()
        self.token = nn.Embedding(vocab_size, context_dim)
        self.position = nn.Parameter(torch.zeros(text_len, context_dim))
        self.pooled = nn.Embedding(vocab_size, pooled_dim) if pooled_dim > 0 else None

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        context = self.token(tokens) + self.position[: tokens.shape[1]]
        return context, self.pooled(tokens).mean(dim=1) if self.pooled is not None else None


@dataclasses.dataclass
class PixelLatent:
    """RGB <-> latent mapping (see the module docstring). ``height``/``width`` are in pixels."""

    height: int
    width: int
    factor: int
    channels: int
    frames: Optional[int] = None   # video: default number of frames; None for image models

    @property
    def used_channels(self) -> int:
        return 3 * self.factor * self.factor

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.height // self.factor, self.width // self.factor

    def to_raw(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, [T,] H, W) in [-1, 1] -> model-space latent (B, C, [T,] h, w)."""
        video = pixels.ndim == 5
        if video:
            b, _, t, h, w = pixels.shape
            pixels = pixels.permute(0, 2, 1, 3, 4).reshape(b * t, 3, h, w)
        raw = F.pixel_unshuffle(pixels, self.factor) if self.factor > 1 else pixels
        pad = self.channels - raw.shape[1]
        if pad < 0:
            raise ValueError(f"{raw.shape[1]} pixel channels do not fit a {self.channels}-channel latent")
        raw = torch.cat([raw, raw.new_zeros(raw.shape[0], pad, *raw.shape[2:])], dim=1)
        if video:
            raw = raw.reshape(b, t, *raw.shape[1:]).permute(0, 2, 1, 3, 4)
        return raw

    def from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """Model-space latent (B, C, [T,] h, w) -> pixels (B, 3, [T,] H, W) (not clamped)."""
        video = raw.ndim == 5
        if video:
            b, c, t, h, w = raw.shape
            raw = raw.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        pix = raw[:, : self.used_channels]
        pix = F.pixel_shuffle(pix, self.factor) if self.factor > 1 else pix
        if video:
            pix = pix.reshape(b, t, *pix.shape[1:]).permute(0, 2, 1, 3, 4)
        return pix


@dataclasses.dataclass
class ReferenceSpec:
    """Everything about a reference model except its diffusion weights. Built from a file's metadata."""

    name: str
    family: str                      # one of FAMILIES
    model_class: str                 # "FluxSchnell" | "HunyuanVideo" | "DiT" | "QwenImage" | "Flux2" | "WAN21_T2V"
    unet_config: dict
    latent: PixelLatent
    vocabulary: list = dataclasses.field(default_factory=list)   # index 0 is <pad>
    text_len: int = 0
    context_dim: int = 0
    pooled_dim: int = 0
    classes: Optional[list] = None   # DiT: class names, index = label
    prompts: dict = dataclasses.field(default_factory=dict)      # grammar description and examples
    training: dict = dataclasses.field(default_factory=dict)     # how the weights were made (informational)
    embedder: Optional[TextEmbedder] = dataclasses.field(default=None, repr=False)

    # -- (de)serialisation -------------------------------------------------------------------------
    def to_metadata(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("embedder", "latent")}
        d["latent"] = dataclasses.asdict(self.latent)
        d["format_version"] = FORMAT_VERSION
        return {METADATA_KEY: json.dumps(d, sort_keys=True)}

    @classmethod
    def from_metadata(cls, metadata: dict, name: Optional[str] = None) -> "ReferenceSpec":
        if not metadata or METADATA_KEY not in metadata:
            raise ValueError("not a ClusCa reference model (no 'clusca_reference' metadata)")
        d = json.loads(metadata[METADATA_KEY])
        version = d.pop("format_version", 1)
        if version > FORMAT_VERSION:
            raise ValueError(f"reference model format {version} is newer than this pack understands ({FORMAT_VERSION})")
        d["latent"] = PixelLatent(**d["latent"])
        if name is not None:
            d["name"] = name
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def make_embedder(self) -> Optional[TextEmbedder]:
        if self.family == "dit":
            return None
        return TextEmbedder(len(self.vocabulary), self.text_len, self.context_dim, self.pooled_dim)

    # -- ComfyUI model config ----------------------------------------------------------------------
    def model_config_class(self):
        import comfy.supported_models
        if self.model_class == "DiT":
            from ..dit.config import DiTModelConfig
            return DiTModelConfig
        cls = getattr(comfy.supported_models, self.model_class, None)
        if cls is None:
            raise ValueError(f"unknown model class {self.model_class!r}")
        return cls

    def latent_format(self):
        """ComfyUI's latent format of the model class (its process_in/process_out)."""
        return self.model_config_class().latent_format()

    def frame_axis(self) -> bool:
        """True for an image model whose latents have a frame axis (its latent format has
        ``latent_dimensions == 3``, e.g. Qwen-Image): its latents are (B, C, 1, h, w)."""
        return self.latent.frames is None and getattr(self.latent_format(), "latent_dimensions", 2) == 3

    def to_model_space(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1], (B, 3, [T,] H, W) -> the model-space latent (with the frame axis where the
        latent format has one)."""
        raw = self.latent.to_raw(pixels)
        return raw.unsqueeze(2) if raw.ndim == 4 and self.frame_axis() else raw

    # -- prompts -----------------------------------------------------------------------------------
    @staticmethod
    def words(text: str) -> list:
        return [w for w in re.split(r"[\s,;.]+", (text or "").strip().lower()) if w]

    def tokenize(self, text: str) -> list:
        """Token ids of a prompt, padded to ``text_len``; PromptError for unknown words or a too long prompt."""
        if self.family == "dit":
            raise PromptError("DiT reference models take class names, not token sequences")
        words = self.words(text)
        index = {w: i for i, w in enumerate(self.vocabulary)}
        unknown = [w for w in words if w not in index or w == PAD]
        if unknown:
            raise PromptError(f"reference model '{self.name}' does not know the word(s) "
                              f"{', '.join(repr(w) for w in unknown)} in the prompt {text!r}. Its vocabulary: "
                              f"{', '.join(w for w in self.vocabulary if w != PAD)}. {self._examples()}")
        if len(words) > self.text_len:
            raise PromptError(f"the prompt {text!r} has {len(words)} words; reference model '{self.name}' takes at "
                              f"most {self.text_len}. {self._examples()}")
        ids = [index[w] for w in words]
        return ids + [index[PAD]] * (self.text_len - len(ids))

    def class_label(self, text: str) -> int:
        """DiT: the class index of a prompt; the empty prompt is the null class (= number of classes)."""
        words = self.words(text)
        if not words:
            return len(self.classes)
        name = " ".join(words)
        if name in self.classes:
            return self.classes.index(name)
        raise PromptError(f"reference model '{self.name}' is class-conditional and has no class {text!r}. Its "
                          f"classes: {', '.join(self.classes)} (empty prompt = unconditional). Vocabulary: "
                          f"{', '.join(w for w in self.vocabulary if w != PAD)}")

    def _examples(self) -> str:
        ex = self.prompts.get("examples") or []
        grammar = self.prompts.get("grammar")
        out = f"Prompt form: {grammar}." if grammar else ""
        if ex:
            out += " Examples: " + "; ".join(repr(e) for e in ex[:4]) + "."
        return out.strip()

    def embed(self, texts: list) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(context, pooled) of a list of prompts (text models; pooled is None for models without one)."""
        tokens = torch.tensor([self.tokenize(t) for t in texts], dtype=torch.long)
        with torch.no_grad():
            context, pooled = self.embedder(tokens)
        return context.float(), pooled.float() if pooled is not None else None

    def _one(self, text: str, batch: int) -> list:
        if self.family == "dit":
            from ..dit.labels import label_conditioning
            label = self.class_label(text)
            cond = label_conditioning(label)
            if batch > 1:
                cond = [[c[0].repeat(batch, *([1] * (c[0].ndim - 1))),
                         {k: (v.repeat(batch) if torch.is_tensor(v) and v.ndim == 1 else v) for k, v in c[1].items()}]
                        for c in cond]
            return cond
        context, pooled = self.embed([text])
        # like a text encoder node's output: "pooled_output" is always there (None without a pooled vector;
        # ComfyUI 0.3.75's FLUX-class models read the key)
        return [[context.repeat(batch, 1, 1), {"pooled_output": pooled.repeat(batch, 1) if pooled is not None else None}]]

    def conditioning(self, text: str, batch: int = 1, negative: str = "") -> tuple[list, list]:
        """(positive, negative) CONDITIONING lists in ComfyUI's format for a prompt and a negative prompt
        (default: the empty prompt, the unconditional input the model was trained with)."""
        return self._one(text, batch), self._one(negative, batch)

    # -- latents -----------------------------------------------------------------------------------
    def empty_latent(self, batch: int = 1, frames: Optional[int] = None) -> dict:
        """A LATENT of zeros of the model's trained size (video: ``frames`` frames, default the trained count;
        an image model with a frame axis: one frame)."""
        h, w = self.latent.latent_hw
        if self.latent.frames is not None:
            t = int(frames or self.latent.frames)
            samples = torch.zeros(batch, self.latent.channels, t, h, w)
        else:
            if frames not in (None, 1):
                raise ValueError(f"reference model '{self.name}' is an image model; frames must be None")
            shape = (batch, self.latent.channels, 1, h, w) if self.frame_axis() else (batch, self.latent.channels, h, w)
            samples = torch.zeros(shape)
        return {"samples": samples}

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """IMAGE-like pixels in [0, 1], (B, H, W, 3) or video (B, T, H, W, 3) -> LATENT samples (outer space)."""
        x = images.float() * 2 - 1
        x = x.permute(0, 4, 1, 2, 3) if x.ndim == 5 else x.permute(0, 3, 1, 2)
        return self.latent_format().process_out(self.to_model_space(x))

    def decode(self, latent) -> torch.Tensor:
        """LATENT (dict or samples tensor, as a sampler returns it) -> IMAGE (B[*T], H, W, 3) in [0, 1];
        video frames are flattened into the batch, sample-major."""
        samples = latent["samples"] if isinstance(latent, dict) else latent
        if samples.ndim == 4 and self.frame_axis():
            samples = samples.unsqueeze(2)          # the latent format expects the frame axis
        raw = self.latent_format().process_in(samples.float().cpu())
        pix = self.latent.from_raw(raw)
        if pix.ndim == 5:
            pix = pix.permute(0, 2, 3, 4, 1).reshape(-1, pix.shape[3], pix.shape[4], 3)
        else:
            pix = pix.permute(0, 2, 3, 1)
        return ((pix + 1) / 2).clamp(0, 1).contiguous()

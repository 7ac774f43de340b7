"""LTX-Video (0.9.x) and the video-only LTX-2 transformer: ``comfy.ldm.lightricks.model.LTXVModel``.

One image stream of ``BasicTransformerBlock``s under the ``double_block`` key (the text is cross-attention
context, not a stream): ``x + gate_msa * attn1(modulate(rms_norm(x)))``, then the text cross-attention
``x + attn2(x, text)`` (with ``cross_attention_adaln``, as in LTX-2: ``x + gate * attn2(modulate(rms_norm(x)),
modulated text)``), then ``x + gate_mlp * ff(modulate(rms_norm(x)))``. The modulation is the block's
``scale_shift_table`` plus the call's timestep embedding, one per token when the sampler gives per-token
timesteps (an image-conditioned first frame, guides): forecasts go through the gates of the current step,
token by token. Guide keyframes (appended latent frames) are cached with the video as reference tokens.

The audio-video model (``av_model.LTXAVModel``, LTX-2 with audio) runs in full: its block updates a
(video, audio) pair with audio-video cross-attention, which this description does not cover.
"""

from __future__ import annotations

from ..adapters.spec import BlockKind, Branch, CallTokens, Family, Mod, Stream, TokenMlp


def rms_norm(x):
    import comfy.ldm.common_dit
    return comfy.ldm.common_dit.rms_norm(x)


def modulation(block, args: dict, extras: dict) -> dict:
    x, t = args["img"], args["vec"]
    table = block.scale_shift_table
    n = table.shape[0]
    ada = table[None, None].to(device=x.device, dtype=x.dtype) + t.reshape(x.shape[0], t.shape[1], n, -1)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = ada[:, :, :6].unbind(dim=2)
    cross = Mod(*ada[:, :, 6:9].unbind(dim=2)) if getattr(block, "cross_attention_adaln", False) else Mod()
    return {"msa": Mod(shift_msa, scale_msa, gate_msa), "cross": cross, "mlp": Mod(shift_mlp, scale_mlp, gate_mlp)}


def tokens(dm, bound: dict, config):
    x = bound.get("x")
    if not hasattr(x, "ndim") or x.ndim != 5:
        return "unexpected input layout"
    pt, ph, pw = dm.patchifier.patch_size
    frames, rows, cols = x.shape[2] // pt, x.shape[3] // ph, x.shape[4] // pw
    keyframes = bound.get("keyframe_idxs")
    n_ref = 0 if keyframes is None else keyframes.shape[2]
    if n_ref:
        mask = bound.get("denoise_mask")
        if mask is not None and bool((mask < 0).any()):
            return "guide latents with a token mask (dilated references) are computed in full"
        if n_ref % (rows * cols):
            return "guide keyframes that are not whole latent frames are computed in full"
        frames -= n_ref // (rows * cols)
    return CallTokens(batch=x.shape[0], grid=(frames, rows, cols), reference=n_ref, fingerprint=(n_ref,))


BLOCK = BlockKind(
    key="double_block", blocks="transformer_blocks",
    streams=(Stream("img", (Branch("attn", "attn1", "msa"),
                            Branch("cross", "attn2", "cross"),
                            Branch("mlp", "ff", "mlp", TokenMlp(rms_norm, "ff"))), clusters="img"),),
    modulation=modulation, clusters=True)

LTXV = Family(
    key="ltxv", name="LTX-Video", model_class="comfy.ldm.lightricks.model:LTXVModel", block_kinds=(BLOCK,),
    tokens=tokens,
    notes="LTX-Video 0.9.x and video-only LTX-2 (cross-attention AdaLN); per-token timesteps and guide keyframes "
          "are cached; dilated guide latents run in full")

LTX_AV = Family(
    key="ltx_av", name="LTX-2 audio-video", model_class="comfy.ldm.lightricks.av_model:LTXAVModel", block_kinds=(),
    tokens=lambda dm, bound, config: "not supported",
    refuse=lambda dm: ("LTX-2 audio-video (LTXAVModel) runs in full: its blocks update a (video, audio) pair with "
                       "audio-video cross-attention, which ClusCa's block description does not cover"),
    notes="runs in full (the node passes the model through unchanged, with a log line)")

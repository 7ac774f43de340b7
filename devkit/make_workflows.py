"""Generates the example workflows in ``workflows/`` (UI format) and their thumbnails.

    .venv/bin/python -m devkit.make_workflows            # all of them
    .venv/bin/python -m devkit.make_workflows --check    # fail if a file differs from what would be written

The node layout, sockets and widget values come from the node definitions of the real ComfyUI with this pack
loaded (``devkit.workflow_api.load_all_nodes``). Thumbnails are drawn with PIL: the workflow's chain of nodes
with the ClusCa node highlighted.

Each workflow is generated on one ComfyUI tree (``Spec.comfyui``): the oldest tested tree that has its core
nodes (0.3.75 for most; 0.33.0 for LTX-2, whose nodes 0.3.75 lacks), so that the files stay the same whichever
tree runs the generator. On another tree those workflows are left out, with a line saying which tree writes
them (``COMFYUI=0.33.0 .venv/bin/python -m devkit.make_workflows --check`` checks the LTX-2 workflow).

Model file names and download addresses are those of ComfyUI's own template catalogue
(github.com/Comfy-Org/workflow_templates, ``templates/*.json``, ``properties.models`` of their loaders) and of
its model docs (docs.comfy.org); the sampler settings follow those templates.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass
from typing import Callable

from .comfy_env import COMFYUI_VERSIONS, REPO, comfyui_version
from .workflow_builder import UIWorkflow

WORKFLOWS = REPO / "workflows"
CLUSCA_COLOR, CLUSCA_BGCOLOR = "#1d4a52", "#2b6b76"

HF = "https://huggingface.co"
FLUX_TEXT = f"{HF}/comfyanonymous/flux_text_encoders/resolve/main"
HY = f"{HF}/Comfy-Org/HunyuanVideo_repackaged/resolve/main/split_files"
QWEN = f"{HF}/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files"
QWEN_EDIT = f"{HF}/Comfy-Org/Qwen-Image-Edit_ComfyUI/resolve/main/split_files"
KLEIN = f"{HF}/Comfy-Org/flux2-klein/resolve/main/split_files"
FLUX2_DEV = f"{HF}/Comfy-Org/flux2-dev/resolve/main/split_files"
ZIMAGE = f"{HF}/Comfy-Org/z_image_turbo/resolve/main/split_files"
WAN22 = f"{HF}/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files"
WAN21 = f"{HF}/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
LTX2 = f"{HF}/Lightricks/LTX-2/resolve/main"
LTX2_TE = f"{HF}/Comfy-Org/ltx-2/resolve/main/split_files"
#: the tree most workflows are generated on (the oldest tested one)
OLDEST = COMFYUI_VERSIONS[0]


def model(name, directory, url=None) -> dict:
    entry = {"name": name, "directory": directory}
    if url:
        entry["url"] = url
    return entry


FLUX_CLIP_MODELS = [model("clip_l.safetensors", "text_encoders", f"{FLUX_TEXT}/clip_l.safetensors"),
                    model("t5xxl_fp16.safetensors", "text_encoders", f"{FLUX_TEXT}/t5xxl_fp16.safetensors")]
FLUX_VAE = model("ae.safetensors", "vae", f"{HF}/black-forest-labs/FLUX.1-schnell/resolve/main/ae.safetensors")


QWEN_TE = model("qwen_2.5_vl_7b_fp8_scaled.safetensors", "text_encoders",
                f"{QWEN}/text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors")
QWEN_VAE = model("qwen_image_vae.safetensors", "vae", f"{QWEN}/vae/qwen_image_vae.safetensors")
UMT5 = model("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders",
             f"{WAN21}/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors")
WAN_NEGATIVE = "blurry, low quality, static, still frame, distorted, extra limbs, watermark, subtitles, text"
BYPASS_TIP = ("For the uncached result, bypass ClusCa and ClusCa Cluster Map (select both, Ctrl+B): the map needs "
              "a ClusCa model.")


def clusca(wf, pos, title=None, **widgets):
    """The ClusCa node (speed-up and caching window; ``widgets`` override its defaults)."""
    return wf.add("ClusCa", pos, widgets, title=title, color=CLUSCA_COLOR, bgcolor=CLUSCA_BGCOLOR)


def sample_decode_save(wf, cc, positive, negative, latent, vae, sampler_widgets: dict, prefix: str,
                       xs=(1240, 1600, 1950), save_size=(400, 440), map_pos=(1480, 500)) -> None:
    """KSampler (seed 42, denoise 1) on the ClusCa model -> VAE Decode -> Save Image, and a cluster map;
    ``positive`` / ``negative`` are (node, output) pairs; ``xs`` the three nodes' x positions."""
    sampler = wf.add("KSampler", (xs[0], 20), {"seed": 42, "denoise": 1.0, **sampler_widgets})
    wf.link(cc, 0, sampler, "model")
    wf.link(*positive, sampler, "positive")
    wf.link(*negative, sampler, "negative")
    wf.link(latent, 0, sampler, "latent_image")
    decode = wf.add("VAEDecode", (xs[1], 20))
    wf.link(sampler, 0, decode, "samples")
    wf.link(vae, 0, decode, "vae")
    save = wf.add("SaveImage", (xs[2], 20), {"filename_prefix": prefix}, size=save_size)
    wf.link(decode, 0, save, "images")
    cluster_map(wf, map_pos, cc, sampler, decode)


def cluster_map(wf, pos, model_node, sampler, image_node, output="preview", prefix=None):
    m = wf.add("ClusCaClusterMap", pos, color=CLUSCA_COLOR, bgcolor=CLUSCA_BGCOLOR)
    wf.link(model_node, 0, m, "model")
    wf.link(sampler, 0, m, "samples")
    wf.link(image_node, 0, m, "image")
    if output == "preview":
        out = wf.add("PreviewImage", (pos[0] + 360, pos[1]), size=(300, 300))
    else:
        out = wf.add("SaveImage", (pos[0] + 360, pos[1]), {"filename_prefix": prefix}, size=(300, 320))
    wf.link(m, 0, out, "images")
    return m, out


def flux_dev(oi) -> UIWorkflow:
    wf = UIWorkflow(oi, "6f1c2a8e-3b7d-4c55-9a61-0c1f1f0a0001")
    wf.note(
        "FLUX.1 [dev] text-to-image with ClusCa\n\n"
        "Model files (in ComfyUI/models/):\n"
        "- diffusion_models/flux1-dev.safetensors  (black-forest-labs/FLUX.1-dev)\n"
        "- text_encoders/clip_l.safetensors and text_encoders/t5xxl_fp16.safetensors  "
        "(comfyanonymous/flux_text_encoders; t5xxl_fp8_e4m3fn.safetensors works too)\n"
        "- vae/ae.safetensors  (black-forest-labs/FLUX.1-schnell)\n\n"
        "ClusCa sits between the model loader and the sampler and asks for a 4x speed-up: about 50 / 4 of the "
        "50 steps run the model in full, the others are forecast from the cache, and the error it measures decides "
        "where the full steps go. The node shows what the run reached, and the cluster map which image tokens "
        "ClusCa grouped. " + BYPASS_TIP,
        (20, 20), (440, 330), title="Read me: model files")
    unet = wf.add("UNETLoader", (20, 380), {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"},
                  models=[model("flux1-dev.safetensors", "diffusion_models",
                                f"{HF}/black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors")])
    clip = wf.add("DualCLIPLoader", (20, 520), {"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors",
                                                "type": "flux"}, models=FLUX_CLIP_MODELS)
    vae = wf.add("VAELoader", (20, 720), {"vae_name": "ae.safetensors"}, models=[FLUX_VAE])
    cc = clusca(wf, (480, 20))
    wf.link(unet, 0, cc, "model")
    text = wf.add("CLIPTextEncode", (480, 440), {"text": "a red fox curled up asleep in fresh snow at dawn, soft "
                                                          "golden light, detailed fur, shallow depth of field"},
                  size=(400, 180))
    wf.link(clip, 0, text, "clip")
    guidance = wf.add("FluxGuidance", (900, 440), {"guidance": 3.5})
    wf.link(text, 0, guidance, "conditioning")
    zero = wf.add("ConditioningZeroOut", (900, 560))
    wf.link(text, 0, zero, "conditioning")
    latent = wf.add("EmptySD3LatentImage", (480, 660), {"width": 1024, "height": 1024, "batch_size": 1})
    sample_decode_save(wf, cc, (guidance, 0), (zero, 0), latent, vae,
                       {"steps": 50, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple"}, "ClusCa/flux_dev")
    return wf


def flux_kontext(oi) -> UIWorkflow:
    wf = UIWorkflow(oi, "6f1c2a8e-3b7d-4c55-9a61-0c1f1f0a0002")
    wf.note(
        "FLUX.1 Kontext [dev] image editing with ClusCa\n\n"
        "Model files (in ComfyUI/models/):\n"
        "- diffusion_models/flux1-kontext-dev.safetensors  (black-forest-labs/FLUX.1-Kontext-dev)\n"
        "- text_encoders/clip_l.safetensors and text_encoders/t5xxl_fp16.safetensors  "
        "(comfyanonymous/flux_text_encoders)\n"
        "- vae/ae.safetensors  (black-forest-labs/FLUX.1-schnell)\n\n"
        "Load the image to edit in Load Image (example.png ships with ComfyUI) and describe the edit. "
        "The reference image's tokens are always computed in full; ClusCa caches the generated image's "
        "tokens. 30 steps, ClusCa asking for 4x.",
        (20, 20), (440, 330), title="Read me: model files")
    unet = wf.add("UNETLoader", (20, 380), {"unet_name": "flux1-kontext-dev.safetensors", "weight_dtype": "default"},
                  models=[model("flux1-kontext-dev.safetensors", "diffusion_models",
                                f"{HF}/black-forest-labs/FLUX.1-Kontext-dev/resolve/main/flux1-kontext-dev.safetensors")])
    clip = wf.add("DualCLIPLoader", (20, 520), {"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors",
                                                "type": "flux"}, models=FLUX_CLIP_MODELS)
    vae = wf.add("VAELoader", (20, 720), {"vae_name": "ae.safetensors"}, models=[FLUX_VAE])
    image = wf.add("LoadImage", (20, 860), {"image": "example.png"}, size=(320, 380))
    scale = wf.add("FluxKontextImageScale", (360, 860))
    wf.link(image, 0, scale, "image")
    encode = wf.add("VAEEncode", (720, 860))
    wf.link(scale, 0, encode, "pixels")
    wf.link(vae, 0, encode, "vae")
    cc = clusca(wf, (480, 20))
    wf.link(unet, 0, cc, "model")
    text = wf.add("CLIPTextEncode", (480, 440), {"text": "make it a watercolour painting, keep the composition"},
                  size=(400, 160))
    wf.link(clip, 0, text, "clip")
    ref = wf.add("ReferenceLatent", (900, 440))
    wf.link(text, 0, ref, "conditioning")
    wf.link(encode, 0, ref, "latent")
    guidance = wf.add("FluxGuidance", (900, 560), {"guidance": 2.5})
    wf.link(ref, 0, guidance, "conditioning")
    zero = wf.add("ConditioningZeroOut", (900, 680))
    wf.link(text, 0, zero, "conditioning")
    sample_decode_save(wf, cc, (guidance, 0), (zero, 0), encode, vae,
                       {"steps": 30, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple"}, "ClusCa/flux_kontext")
    return wf


def dit_xl(oi) -> UIWorkflow:
    wf = UIWorkflow(oi, "6f1c2a8e-3b7d-4c55-9a61-0c1f1f0a0003")
    wf.note(
        "DiT-XL/2 class-to-image (ImageNet 256x256) with ClusCa\n\n"
        "Model files (in ComfyUI/models/):\n"
        "- diffusion_models/DiT-XL-2-256x256.pt  (facebookresearch/DiT: dl.fbaipublicfiles.com/DiT/models/; "
        "models/checkpoints works too; DiT-XL-2-512x512.pt with a 512x512 latent)\n"
        "- vae/vae-ft-mse-840000-ema-pruned.safetensors  (stabilityai/sd-vae-ft-mse-original)\n\n"
        "Pick the class by index (207 = golden retriever) or by name. 50 DDIM steps, CFG 4; ClusCa asks for 4x. "
        "ClusCa (Advanced) with schedule 'paper' runs the DiT reference code's schedule instead (interval 4, "
        "warm-up 2, Taylor order 4).",
        (20, 20), (440, 300), title="Read me: model files")
    loader = wf.add("ClusCaDiTLoader", (20, 360), {"ckpt_name": "DiT-XL-2-256x256.pt", "weight_dtype": "default"},
                    models=[model("DiT-XL-2-256x256.pt", "diffusion_models",
                                  "https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt")])
    vae = wf.add("VAELoader", (20, 510), {"vae_name": "vae-ft-mse-840000-ema-pruned.safetensors"},
                 models=[model("vae-ft-mse-840000-ema-pruned.safetensors", "vae",
                               f"{HF}/stabilityai/sd-vae-ft-mse-original/resolve/main/"
                               "vae-ft-mse-840000-ema-pruned.safetensors")])
    label = wf.add("ClusCaDiTClassLabel", (20, 640), {"class_index": 207, "class_name": ""})
    latent = wf.add("EmptyLatentImage", (20, 800), {"width": 256, "height": 256, "batch_size": 1})
    cc = clusca(wf, (480, 20))
    wf.link(loader, 0, cc, "model")
    sample_decode_save(wf, cc, (label, "positive"), (label, "negative"), latent, vae,
                       {"steps": 50, "cfg": 4.0, "sampler_name": "ddim", "scheduler": "ddim_uniform"}, "ClusCa/dit_xl",
                       xs=(880, 1240, 1590), save_size=(320, 360), map_pos=(1120, 420))
    return wf


def hunyuan_video(oi) -> UIWorkflow:
    wf = UIWorkflow(oi, "6f1c2a8e-3b7d-4c55-9a61-0c1f1f0a0004")
    wf.note(
        "HunyuanVideo text-to-video with ClusCa\n\n"
        "Model files (in ComfyUI/models/, all from Comfy-Org/HunyuanVideo_repackaged):\n"
        "- diffusion_models/hunyuan_video_t2v_720p_bf16.safetensors\n"
        "- text_encoders/clip_l.safetensors and text_encoders/llava_llama3_fp8_scaled.safetensors\n"
        "- vae/hunyuan_video_vae_bf16.safetensors\n\n"
        "848x480, 73 frames, 30 steps; ClusCa asks for 4x. ClusCa (Advanced) offers cluster_per_frame (every "
        "latent frame clustered on its own) and the HunyuanVideo reference code's schedule (schedule 'paper'). "
        "The cluster map is saved as a second video, frame by frame.",
        (20, 20), (440, 300), title="Read me: model files")
    unet = wf.add("UNETLoader", (20, 360), {"unet_name": "hunyuan_video_t2v_720p_bf16.safetensors",
                                            "weight_dtype": "default"},
                  models=[model("hunyuan_video_t2v_720p_bf16.safetensors", "diffusion_models",
                                f"{HY}/diffusion_models/hunyuan_video_t2v_720p_bf16.safetensors")])
    clip = wf.add("DualCLIPLoader", (20, 490), {"clip_name1": "clip_l.safetensors",
                                                "clip_name2": "llava_llama3_fp8_scaled.safetensors",
                                                "type": "hunyuan_video"},
                  models=[model("clip_l.safetensors", "text_encoders", f"{HY}/text_encoders/clip_l.safetensors"),
                          model("llava_llama3_fp8_scaled.safetensors", "text_encoders",
                                f"{HY}/text_encoders/llava_llama3_fp8_scaled.safetensors")])
    vae = wf.add("VAELoader", (20, 690), {"vae_name": "hunyuan_video_vae_bf16.safetensors"},
                 models=[model("hunyuan_video_vae_bf16.safetensors", "vae",
                               f"{HY}/vae/hunyuan_video_vae_bf16.safetensors")])
    shift = wf.add("ModelSamplingSD3", (20, 820), {"shift": 7.0})
    wf.link(unet, 0, shift, "model")
    cc = clusca(wf, (480, 20))
    wf.link(shift, 0, cc, "model")
    text = wf.add("CLIPTextEncode", (480, 440), {"text": "a paper boat drifting down a rain-filled street gutter, "
                                                          "reflections of neon signs, slow camera follow"},
                  size=(400, 160))
    wf.link(clip, 0, text, "clip")
    guidance = wf.add("FluxGuidance", (900, 440), {"guidance": 6.0})
    wf.link(text, 0, guidance, "conditioning")
    zero = wf.add("ConditioningZeroOut", (900, 560))
    wf.link(text, 0, zero, "conditioning")
    latent = wf.add("EmptyHunyuanLatentVideo", (480, 640), {"width": 848, "height": 480, "length": 73,
                                                            "batch_size": 1})
    sampler = wf.add("KSampler", (1240, 20), {"seed": 42, "steps": 30, "cfg": 1.0, "sampler_name": "euler",
                                              "scheduler": "simple", "denoise": 1.0})
    wf.link(cc, 0, sampler, "model")
    wf.link(guidance, 0, sampler, "positive")
    wf.link(zero, 0, sampler, "negative")
    wf.link(latent, 0, sampler, "latent_image")
    decode = wf.add("VAEDecodeTiled", (1600, 20), {"tile_size": 256, "overlap": 64, "temporal_size": 64,
                                                   "temporal_overlap": 8})
    wf.link(sampler, 0, decode, "samples")
    wf.link(vae, 0, decode, "vae")
    save_video(wf, decode, (1950, 20), 24.0, "ClusCa/hunyuan_video")
    video_cluster_map(wf, (1600, 420), cc, sampler, decode, 24.0, "ClusCa/hunyuan_video_clusters")
    return wf


def save_video(wf, images, pos, fps: float, prefix: str, audio=None, size=(400, 360)):
    """Create Video (``fps``, optional audio) -> Save Video, from ``pos`` to the right."""
    video = wf.add("CreateVideo", pos, {"fps": fps})
    wf.link(images, 0, video, "images")
    if audio is not None:
        wf.link(audio, 0, video, "audio")
    save = wf.add("SaveVideo", (pos[0] + 350, pos[1]), {"filename_prefix": prefix}, size=size)
    wf.link(video, 0, save, "video")
    return save


def video_cluster_map(wf, pos, model_node, sampler, decode, fps: float, prefix: str):
    """ClusCa Cluster Map of a video run, saved as a video beside the decoded one (one map per frame)."""
    cmap = wf.add("ClusCaClusterMap", pos, color=CLUSCA_COLOR, bgcolor=CLUSCA_BGCOLOR)
    wf.link(model_node, 0, cmap, "model")
    wf.link(sampler, 0, cmap, "samples")
    wf.link(decode, 0, cmap, "image")
    save_video(wf, cmap, (pos[0] + 350, pos[1]), fps, prefix)
    return cmap


def model_files_note(wf, title: str, files: list, text: str, size=(440, 330)):
    """The Read-me Note: the workflow's title, each model file with its folder and source, then ``text``."""
    lines = [f"{title}\n", "Model files (in ComfyUI/models/):"]
    lines += [f"- {m['directory']}/{m['name']}  ({source})" for m, source in files]
    wf.note("\n".join(lines) + "\n\n" + text, (20, 20), size, title="Read me: model files")


def model_loaders(wf, unet_file: dict, te_file: dict, clip_type: str, vae_file: dict) -> tuple:
    """The diffusion model, its one text encoder and its VAE, loaded in the left column: (unet, clip, vae)."""
    unet = wf.add("UNETLoader", (20, 380), {"unet_name": unet_file["name"], "weight_dtype": "default"},
                  models=[unet_file])
    clip = wf.add("CLIPLoader", (20, 520), {"clip_name": te_file["name"], "type": clip_type}, models=[te_file])
    vae = wf.add("VAELoader", (20, 690), {"vae_name": vae_file["name"]}, models=[vae_file])
    return unet, clip, vae


def qwen_image(oi) -> UIWorkflow:
    wf = UIWorkflow(oi, "6f1c2a8e-3b7d-4c55-9a61-0c1f1f0a0006")
    unet_file = model("qwen_image_fp8_e4m3fn.safetensors", "diffusion_models",
                      f"{QWEN}/diffusion_models/qwen_image_fp8_e4m3fn.safetensors")
    model_files_note(
        wf, "Qwen-Image text-to-image with ClusCa",
        [(unet_file, "Comfy-Org/Qwen-Image_ComfyUI"), (QWEN_TE, "Comfy-Org/Qwen-Image_ComfyUI"),
         (QWEN_VAE, "Comfy-Org/Qwen-Image_ComfyUI")],
        "1328x1328, 20 steps, CFG 4, shift 3.5 (ComfyUI's Qwen-Image template). ClusCa asks for a 4x speed-up: "
        "about 20 / 4 steps run the model in full, the others are forecast from the cache. " + BYPASS_TIP)
    unet, clip, vae = model_loaders(wf, unet_file, QWEN_TE, "qwen_image", QWEN_VAE)
    shift = wf.add("ModelSamplingAuraFlow", (20, 800), {"shift": 3.5})
    wf.link(unet, 0, shift, "model")
    cc = clusca(wf, (480, 20))
    wf.link(shift, 0, cc, "model")
    text = wf.add("CLIPTextEncode", (480, 300), {"text": "a quiet bookshop at night, warm lamps, rain on the window, a "
                                                          "hand-painted sign above the door that reads \"Open Late\""},
                  size=(400, 180))
    wf.link(clip, 0, text, "clip")
    negative = wf.add("CLIPTextEncode", (480, 500), {"text": "low quality, blurry, distorted text"}, size=(400, 120),
                      title="CLIP Text Encode (Negative Prompt)")
    wf.link(clip, 0, negative, "clip")
    latent = wf.add("EmptySD3LatentImage", (480, 660), {"width": 1328, "height": 1328, "batch_size": 1})
    sample_decode_save(wf, cc, (text, 0), (negative, 0), latent, vae,
                       {"steps": 20, "cfg": 4.0, "sampler_name": "euler", "scheduler": "simple"}, "ClusCa/qwen_image")
    return wf


def qwen_image_edit(oi) -> UIWorkflow:
    wf = UIWorkflow(oi, "6f1c2a8e-3b7d-4c55-9a61-0c1f1f0a0007")
    unet_file = model("qwen_image_edit_2509_fp8_e4m3fn.safetensors", "diffusion_models",
                      f"{QWEN_EDIT}/diffusion_models/qwen_image_edit_2509_fp8_e4m3fn.safetensors")
    model_files_note(
        wf, "Qwen-Image-Edit 2509 image editing with ClusCa",
        [(unet_file, "Comfy-Org/Qwen-Image-Edit_ComfyUI"), (QWEN_TE, "Comfy-Org/Qwen-Image_ComfyUI"),
         (QWEN_VAE, "Comfy-Org/Qwen-Image_ComfyUI")],
        "Load the image to edit in Load Image (example.png ships with ComfyUI) and describe the edit. 20 steps, "
        "CFG 2.5, shift 3, CFGNorm (ComfyUI's Qwen-Image-Edit 2509 template). The reference image's tokens are "
        "cached and refreshed with the generated image's; ClusCa asks for 4x. " + BYPASS_TIP)
    unet, clip, vae = model_loaders(wf, unet_file, QWEN_TE, "qwen_image", QWEN_VAE)
    image = wf.add("LoadImage", (20, 800), {"image": "example.png"}, size=(320, 380))
    scale = wf.add("FluxKontextImageScale", (360, 800))
    wf.link(image, 0, scale, "image")
    encode = wf.add("VAEEncode", (720, 800))
    wf.link(scale, 0, encode, "pixels")
    wf.link(vae, 0, encode, "vae")
    shift = wf.add("ModelSamplingAuraFlow", (480, 20), {"shift": 3.0})
    wf.link(unet, 0, shift, "model")
    norm = wf.add("CFGNorm", (480, 130), {"strength": 1.0})
    wf.link(shift, 0, norm, "model")
    cc = clusca(wf, (880, 20))
    wf.link(norm, 0, cc, "model")
    prompts = []
    for i, (text, title) in enumerate([("turn the scene into a snowy winter evening, keep everything else", None),
                                       ("", "TextEncodeQwenImageEditPlus (Negative)")]):
        enc = wf.add("TextEncodeQwenImageEditPlus", (480, 300 + 220 * i), {"prompt": text}, size=(380, 180),
                     title=title)
        wf.link(clip, 0, enc, "clip")
        wf.link(vae, 0, enc, "vae")
        wf.link(scale, 0, enc, "image1")
        prompts.append(enc)
    sample_decode_save(wf, cc, (prompts[0], 0), (prompts[1], 0), encode, vae,
                       {"steps": 20, "cfg": 2.5, "sampler_name": "euler", "scheduler": "simple"},
                       "ClusCa/qwen_image_edit")
    return wf


def flux2_klein(oi) -> UIWorkflow:
    wf = UIWorkflow(oi, "6f1c2a8e-3b7d-4c55-9a61-0c1f1f0a0008")
    unet_file = model("flux-2-klein-base-4b.safetensors", "diffusion_models",
                      f"{KLEIN}/diffusion_models/flux-2-klein-base-4b.safetensors")
    te_file = model("qwen_3_4b.safetensors", "text_encoders", f"{KLEIN}/text_encoders/qwen_3_4b.safetensors")
    vae_file = model("flux2-vae.safetensors", "vae", f"{FLUX2_DEV}/vae/flux2-vae.safetensors")
    model_files_note(
        wf, "FLUX.2 [klein] 4B (base) text-to-image with ClusCa",
        [(unet_file, "Comfy-Org/flux2-klein"), (te_file, "Comfy-Org/flux2-klein"), (vae_file, "Comfy-Org/flux2-dev")],
        "Needs a ComfyUI that runs FLUX.2 Klein (0.33.0 does; 0.3.75 does not load its Qwen3 text encoder for "
        "FLUX.2). 1024x1024, 20 steps, CFG 5 through the custom sampler (ComfyUI's FLUX.2 Klein template): ClusCa "
        "sits between the model loader and the guider and asks for 4x. The distilled flux-2-klein-4b.safetensors "
        "runs 4 steps at CFG 1: too few to skip much, ask for 2x at most. " + BYPASS_TIP)
    unet, clip, vae = model_loaders(wf, unet_file, te_file, "flux2", vae_file)
    cc = clusca(wf, (480, 20))
    wf.link(unet, 0, cc, "model")
    text = wf.add("CLIPTextEncode", (480, 300), {"text": "a hedgehog in a tiny knitted scarf on a mossy log, "
                                                          "morning mist, macro photograph"}, size=(400, 160))
    wf.link(clip, 0, text, "clip")
    negative = wf.add("CLIPTextEncode", (480, 480), {"text": ""}, size=(400, 100),
                      title="CLIP Text Encode (Negative Prompt)")
    wf.link(clip, 0, negative, "clip")
    latent = wf.add("EmptyFlux2LatentImage", (480, 620), {"width": 1024, "height": 1024, "batch_size": 1})
    guider = wf.add("CFGGuider", (900, 20), {"cfg": 5.0})
    wf.link(cc, 0, guider, "model")
    wf.link(text, 0, guider, "positive")
    wf.link(negative, 0, guider, "negative")
    sigmas = wf.add("Flux2Scheduler", (900, 160), {"steps": 20, "width": 1024, "height": 1024})
    sampler_select = wf.add("KSamplerSelect", (900, 320), {"sampler_name": "euler"})
    noise = wf.add("RandomNoise", (900, 420), {"noise_seed": 42})
    sampler = wf.add("SamplerCustomAdvanced", (1240, 20))
    wf.link(noise, 0, sampler, "noise")
    wf.link(guider, 0, sampler, "guider")
    wf.link(sampler_select, 0, sampler, "sampler")
    wf.link(sigmas, 0, sampler, "sigmas")
    wf.link(latent, 0, sampler, "latent_image")
    decode = wf.add("VAEDecode", (1600, 20))
    wf.link(sampler, 0, decode, "samples")
    wf.link(vae, 0, decode, "vae")
    save = wf.add("SaveImage", (1950, 20), {"filename_prefix": "ClusCa/flux2_klein"}, size=(400, 440))
    wf.link(decode, 0, save, "images")
    cluster_map(wf, (1480, 500), cc, sampler, decode)
    return wf


def z_image_turbo(oi) -> UIWorkflow:
    wf = UIWorkflow(oi, "6f1c2a8e-3b7d-4c55-9a61-0c1f1f0a0009")
    unet_file = model("z_image_turbo_bf16.safetensors", "diffusion_models",
                      f"{ZIMAGE}/diffusion_models/z_image_turbo_bf16.safetensors")
    te_file = model("qwen_3_4b.safetensors", "text_encoders", f"{ZIMAGE}/text_encoders/qwen_3_4b.safetensors")
    vae_file = model("ae.safetensors", "vae", f"{ZIMAGE}/vae/ae.safetensors")
    model_files_note(
        wf, "Z-Image Turbo text-to-image with ClusCa",
        [(unet_file, "Comfy-Org/z_image_turbo"), (te_file, "Comfy-Org/z_image_turbo"),
         (vae_file, "Comfy-Org/z_image_turbo; the FLUX.1 VAE")],
        "1024x1024, 8 steps, CFG 1, res_multistep, shift 3 (ComfyUI's Z-Image Turbo template). A distilled model "
        "with 8 steps leaves little to skip: ClusCa asks for 2x here (4 full steps, 4 from the cache). "
        + BYPASS_TIP)
    unet, clip, vae = model_loaders(wf, unet_file, te_file, "lumina2", vae_file)
    shift = wf.add("ModelSamplingAuraFlow", (20, 800), {"shift": 3.0})
    wf.link(unet, 0, shift, "model")
    cc = clusca(wf, (480, 20), speedup=2.0)
    wf.link(shift, 0, cc, "model")
    text = wf.add("CLIPTextEncode", (480, 300), {"text": "a fisherman mending nets on a wooden pier at golden hour, "
                                                          "seagulls, film photograph"}, size=(400, 180))
    wf.link(clip, 0, text, "clip")
    zero = wf.add("ConditioningZeroOut", (480, 520))
    wf.link(text, 0, zero, "conditioning")
    latent = wf.add("EmptySD3LatentImage", (480, 640), {"width": 1024, "height": 1024, "batch_size": 1})
    sample_decode_save(wf, cc, (text, 0), (zero, 0), latent, vae,
                       {"steps": 8, "cfg": 1.0, "sampler_name": "res_multistep", "scheduler": "simple"},
                       "ClusCa/z_image_turbo")
    return wf


def wan22_ti2v_5b(oi) -> UIWorkflow:
    wf = UIWorkflow(oi, "6f1c2a8e-3b7d-4c55-9a61-0c1f1f0a0010")
    unet_file = model("wan2.2_ti2v_5B_fp16.safetensors", "diffusion_models",
                      f"{WAN22}/diffusion_models/wan2.2_ti2v_5B_fp16.safetensors")
    vae_file = model("wan2.2_vae.safetensors", "vae", f"{WAN22}/vae/wan2.2_vae.safetensors")
    model_files_note(
        wf, "Wan 2.2 TI2V 5B text-to-video with ClusCa",
        [(unet_file, "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"), (UMT5, "Comfy-Org/Wan_2.1_ComfyUI_repackaged"),
         (vae_file, "Comfy-Org/Wan_2.2_ComfyUI_Repackaged")],
        "1280x704, 121 frames at 24 fps, 20 steps, CFG 5, uni_pc, shift 8 (ComfyUI's Wan 2.2 5B template). "
        "ClusCa asks for 4x. For image-to-video, connect a Load Image to start_image of Wan22ImageToVideoLatent: "
        "the kept first frame is cached with its own timestep. The cluster map is saved as a second video. "
        + BYPASS_TIP)
    unet, clip, vae = model_loaders(wf, unet_file, UMT5, "wan", vae_file)
    shift = wf.add("ModelSamplingSD3", (20, 800), {"shift": 8.0})
    wf.link(unet, 0, shift, "model")
    cc = clusca(wf, (480, 20))
    wf.link(shift, 0, cc, "model")
    text = wf.add("CLIPTextEncode", (480, 300), {"text": "a red kite dancing above green dunes by the sea, the "
                                                          "camera slowly follows its string down to a laughing child"},
                  size=(400, 160))
    wf.link(clip, 0, text, "clip")
    negative = wf.add("CLIPTextEncode", (480, 480), {"text": WAN_NEGATIVE}, size=(400, 120),
                      title="CLIP Text Encode (Negative Prompt)")
    wf.link(clip, 0, negative, "clip")
    latent = wf.add("Wan22ImageToVideoLatent", (480, 640), {"width": 1280, "height": 704, "length": 121,
                                                            "batch_size": 1})
    wf.link(vae, 0, latent, "vae")
    sampler = wf.add("KSampler", (1240, 20), {"seed": 42, "steps": 20, "cfg": 5.0, "sampler_name": "uni_pc",
                                              "scheduler": "simple", "denoise": 1.0})
    wf.link(cc, 0, sampler, "model")
    wf.link(text, 0, sampler, "positive")
    wf.link(negative, 0, sampler, "negative")
    wf.link(latent, 0, sampler, "latent_image")
    decode = wf.add("VAEDecode", (1600, 20))
    wf.link(sampler, 0, decode, "samples")
    wf.link(vae, 0, decode, "vae")
    save_video(wf, decode, (1950, 20), 24.0, "ClusCa/wan22_5b")
    video_cluster_map(wf, (1600, 420), cc, sampler, decode, 24.0, "ClusCa/wan22_5b_clusters")
    return wf


def wan22_14b_i2v(oi) -> UIWorkflow:
    wf = UIWorkflow(oi, "6f1c2a8e-3b7d-4c55-9a61-0c1f1f0a0011")
    experts = [model(f"wan2.2_i2v_{which}_noise_14B_fp8_scaled.safetensors", "diffusion_models",
                     f"{WAN22}/diffusion_models/wan2.2_i2v_{which}_noise_14B_fp8_scaled.safetensors")
               for which in ("high", "low")]
    vae_file = model("wan_2.1_vae.safetensors", "vae", f"{WAN22}/vae/wan_2.1_vae.safetensors")
    model_files_note(
        wf, "Wan 2.2 14B image-to-video (both experts) with ClusCa",
        [(experts[0], "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"), (experts[1], "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"),
         (UMT5, "Comfy-Org/Wan_2.1_ComfyUI_repackaged"), (vae_file, "Comfy-Org/Wan_2.2_ComfyUI_Repackaged")],
        "Load the first frame in Load Image (example.png ships with ComfyUI). As in ComfyUI's Wan 2.2 14B I2V "
        "template, the high-noise expert samples steps 0-10 of 20 and hands its leftover noise to the low-noise "
        "expert for steps 10-20 (two KSampler Advanced, CFG 3.5, shift 8; 640x640, 81 frames at 16 fps). Each "
        "expert goes through its own ClusCa node, asking for 4x on its half of the schedule. The cluster map "
        "shows the low-noise expert's clusters. For the uncached video, bypass both ClusCa nodes and the cluster "
        "map.", size=(460, 400))
    clip = wf.add("CLIPLoader", (20, 450), {"clip_name": UMT5["name"], "type": "wan"}, models=[UMT5])
    vae = wf.add("VAELoader", (20, 600), {"vae_name": vae_file["name"]}, models=[vae_file])
    image = wf.add("LoadImage", (20, 720), {"image": "example.png"}, size=(320, 380))
    text = wf.add("CLIPTextEncode", (500, 460), {"text": "the scene comes alive: a gentle breeze moves through it "
                                                          "as the camera slowly pushes in"}, size=(400, 160))
    wf.link(clip, 0, text, "clip")
    negative = wf.add("CLIPTextEncode", (500, 640), {"text": WAN_NEGATIVE}, size=(400, 120),
                      title="CLIP Text Encode (Negative Prompt)")
    wf.link(clip, 0, negative, "clip")
    i2v = wf.add("WanImageToVideo", (500, 800), {"width": 640, "height": 640, "length": 81, "batch_size": 1})
    wf.link(text, 0, i2v, "positive")
    wf.link(negative, 0, i2v, "negative")
    wf.link(vae, 0, i2v, "vae")
    wf.link(image, 0, i2v, "start_image")
    latent, samplers, ccs = (i2v, "latent"), [], []
    for k, (expert, label) in enumerate(zip(experts, ("high noise", "low noise"))):
        y = 20 + 200 * k
        unet = wf.add("UNETLoader", (960, y), {"unet_name": expert["name"], "weight_dtype": "default"},
                      title=f"Load Diffusion Model ({label})", models=[expert])
        shift = wf.add("ModelSamplingSD3", (1300, y), {"shift": 8.0})
        wf.link(unet, 0, shift, "model")
        cc = clusca(wf, (1620, y), title=f"ClusCa ({label})")
        wf.link(shift, 0, cc, "model")
        first = k == 0
        sampler = wf.add("KSamplerAdvanced", (1960 + 360 * k, 20),
                         {"add_noise": "enable" if first else "disable", "noise_seed": 42, "steps": 20, "cfg": 3.5,
                          "sampler_name": "euler", "scheduler": "simple", "start_at_step": 0 if first else 10,
                          "end_at_step": 10 if first else 10000,
                          "return_with_leftover_noise": "enable" if first else "disable"},
                         title=f"KSampler Advanced ({label})")
        wf.link(cc, 0, sampler, "model")
        wf.link(i2v, "positive", sampler, "positive")
        wf.link(i2v, "negative", sampler, "negative")
        wf.link(*latent, sampler, "latent_image")
        latent = (sampler, 0)
        samplers.append(sampler)
        ccs.append(cc)
    decode = wf.add("VAEDecode", (2680, 20))
    wf.link(samplers[-1], 0, decode, "samples")
    wf.link(vae, 0, decode, "vae")
    save_video(wf, decode, (3000, 20), 16.0, "ClusCa/wan22_14b_i2v")
    video_cluster_map(wf, (2680, 460), ccs[-1], samplers[-1], decode, 16.0, "ClusCa/wan22_14b_i2v_clusters")
    return wf


def ltx2(oi) -> UIWorkflow:
    wf = UIWorkflow(oi, "6f1c2a8e-3b7d-4c55-9a61-0c1f1f0a0012")
    ckpt_file = model("ltx-2-19b-dev-fp8.safetensors", "checkpoints", f"{LTX2}/ltx-2-19b-dev-fp8.safetensors")
    te_file = model("gemma_3_12B_it_fp4_mixed.safetensors", "text_encoders",
                    f"{LTX2_TE}/text_encoders/gemma_3_12B_it_fp4_mixed.safetensors")
    model_files_note(
        wf, "LTX-2 text-to-video (with audio) with ClusCa",
        [(ckpt_file, "Lightricks/LTX-2"), (te_file, "Comfy-Org/ltx-2")],
        "Needs ComfyUI's LTX-2 nodes (0.33.0 has them, 0.3.75 does not). 768x512, 97 frames at 24 fps with "
        "sound, 20 steps, CFG 4, one stage (ComfyUI's LTX-2 template adds a 2x latent upscale stage). ClusCa sits "
        "between the checkpoint and the guider. Note: the LTX-2 checkpoints hold the audio-video transformer "
        "(LTXAVModel), which ClusCa does not accelerate yet: it passes the model through unchanged and says so in "
        "the log, so this run takes as long as without it (no cluster map here for that reason). Video-only "
        "LTX models get full ClusCa.", size=(460, 420))
    ckpt = wf.add("CheckpointLoaderSimple", (20, 470), {"ckpt_name": ckpt_file["name"]}, models=[ckpt_file])
    te = wf.add("LTXAVTextEncoderLoader", (20, 620), {"text_encoder": te_file["name"],
                                                      "ckpt_name": ckpt_file["name"]}, models=[te_file, ckpt_file])
    audio_vae = wf.add("LTXVAudioVAELoader", (20, 770), {"ckpt_name": ckpt_file["name"]}, models=[ckpt_file])
    cc = clusca(wf, (500, 20))
    wf.link(ckpt, "MODEL", cc, "model")
    text = wf.add("CLIPTextEncode", (500, 300), {"text": "a street musician plays a slow melody on a saxophone under "
                                                          "a bridge at dusk, passing cars, soft echo, the camera "
                                                          "circles him slowly"}, size=(400, 180))
    wf.link(te, 0, text, "clip")
    negative = wf.add("CLIPTextEncode", (500, 500), {"text": "blurry, low quality, still frame, watermark"},
                      size=(400, 100), title="CLIP Text Encode (Negative Prompt)")
    wf.link(te, 0, negative, "clip")
    cond = wf.add("LTXVConditioning", (500, 640), {"frame_rate": 24.0})
    wf.link(text, 0, cond, "positive")
    wf.link(negative, 0, cond, "negative")
    video_latent = wf.add("EmptyLTXVLatentVideo", (500, 770), {"width": 768, "height": 512, "length": 97,
                                                               "batch_size": 1})
    audio_latent = wf.add("LTXVEmptyLatentAudio", (500, 920), {"frames_number": 97, "frame_rate": 24.0,
                                                               "batch_size": 1})
    wf.link(audio_vae, 0, audio_latent, "audio_vae")
    av_latent = wf.add("LTXVConcatAVLatent", (860, 800))
    wf.link(video_latent, 0, av_latent, "video_latent")
    wf.link(audio_latent, 0, av_latent, "audio_latent")
    guider = wf.add("CFGGuider", (960, 20), {"cfg": 4.0})
    wf.link(cc, 0, guider, "model")
    wf.link(cond, "positive", guider, "positive")
    wf.link(cond, "negative", guider, "negative")
    sigmas = wf.add("LTXVScheduler", (960, 160), {"steps": 20})
    wf.link(av_latent, 0, sigmas, "latent")
    sampler_select = wf.add("KSamplerSelect", (960, 380), {"sampler_name": "euler"})
    noise = wf.add("RandomNoise", (960, 480), {"noise_seed": 42})
    sampler = wf.add("SamplerCustomAdvanced", (1300, 20))
    wf.link(noise, 0, sampler, "noise")
    wf.link(guider, 0, sampler, "guider")
    wf.link(sampler_select, 0, sampler, "sampler")
    wf.link(sigmas, 0, sampler, "sigmas")
    wf.link(av_latent, 0, sampler, "latent_image")
    split = wf.add("LTXVSeparateAVLatent", (1640, 20))
    wf.link(sampler, 0, split, "av_latent")
    decode = wf.add("VAEDecodeTiled", (1960, 20), {"tile_size": 512, "overlap": 64, "temporal_size": 64,
                                                   "temporal_overlap": 8})
    wf.link(split, "video_latent", decode, "samples")
    wf.link(ckpt, "VAE", decode, "vae")
    audio = wf.add("LTXVAudioVAEDecode", (1960, 260))
    wf.link(split, "audio_latent", audio, "samples")
    wf.link(audio_vae, 0, audio, "audio_vae")
    save_video(wf, decode, (2300, 20), 24.0, "ClusCa/ltx2", audio=audio)
    return wf


#: the bundled reference model and prompt of the tiny workflow (no downloads)
TINY_MODEL = "flux_shapes.safetensors"
TINY_PROMPT = "red circle"
TINY_STEPS = 30


def tiny_reference(oi, model_name=TINY_MODEL) -> UIWorkflow:
    wf = UIWorkflow(oi, "6f1c2a8e-3b7d-4c55-9a61-0c1f1f0a0005")
    wf.note(
        "ClusCa on a bundled reference model: runs anywhere, no downloads.\n\n"
        "The reference models in the pack's reference_models/ folder are small diffusion transformers of the "
        "architectures ClusCa accelerates (FLUX, HunyuanVideo, DiT), trained on drawn coloured shapes. "
        "They have no VAE and no text encoder: the prompt node understands a few words (e.g. 'red circle', "
        "'blue square') and the decode node turns the latent into pixels.\n\n"
        "ClusCa asks for a 4x speed-up and shows the run's statistics (the speed-up asked and reached, full and "
        "cached steps); the cluster map shows the token clusters. To compare without ClusCa, bypass ClusCa and "
        "ClusCa Cluster Map (select both, Ctrl+B) and queue again.",
        (20, 20), (420, 300), title="Read me")
    loader = wf.add("ClusCaReferenceModelLoader", (20, 360), {"model_name": model_name})
    prompt = wf.add("ClusCaReferencePrompt", (20, 510), {"prompt": TINY_PROMPT, "negative_prompt": "",
                                                         "batch_size": 1}, size=(360, 220))
    wf.link(loader, 1, prompt, "reference")
    cc = clusca(wf, (460, 20))
    wf.link(loader, 0, cc, "model")
    sampler = wf.add("KSampler", (860, 20), {"seed": 42, "steps": TINY_STEPS, "cfg": 4.0, "sampler_name": "euler",
                                             "scheduler": "simple", "denoise": 1.0})
    wf.link(cc, 0, sampler, "model")
    wf.link(prompt, "positive", sampler, "positive")
    wf.link(prompt, "negative", sampler, "negative")
    wf.link(prompt, "LATENT", sampler, "latent_image")
    decode = wf.add("ClusCaReferenceDecode", (1220, 20))
    wf.link(loader, 1, decode, "reference")
    wf.link(sampler, 0, decode, "samples")
    save = wf.add("SaveImage", (1580, 20), {"filename_prefix": "ClusCa/tiny"}, size=(300, 320))
    wf.link(decode, 0, save, "images")
    cluster_map(wf, (1220, 420), cc, sampler, decode, output="save", prefix="ClusCa/tiny_clusters")
    return wf


@dataclass(frozen=True)
class Spec:
    """One example workflow: its builder, its thumbnail (title, subtitle, the chain of node labels drawn) and
    the ComfyUI tree it is generated on (the oldest tested tree with its core nodes)."""

    builder: Callable
    title: str
    subtitle: str
    chain: tuple
    comfyui: str = OLDEST


IMAGE_CHAIN = ("Load Diffusion Model", "ClusCa", "KSampler", "VAE Decode", "Save Image")
SPECS = {
    "flux_dev_text_to_image": Spec(flux_dev, "FLUX.1 dev - text to image", "1024x1024 - 50 steps - ClusCa 4x",
                                   IMAGE_CHAIN),
    "flux_kontext_edit": Spec(flux_kontext, "FLUX.1 Kontext - image edit", "reference image in full - 30 steps",
                              ("Load Image", "ClusCa", "KSampler", "VAE Decode", "Save Image")),
    "dit_xl2_class_to_image": Spec(dit_xl, "DiT-XL/2 - class to image", "ImageNet 256x256 - 50 DDIM steps - CFG 4",
                                   ("Load DiT Checkpoint", "ClusCa", "KSampler", "VAE Decode", "Save Image")),
    "hunyuan_video_text_to_video": Spec(hunyuan_video, "HunyuanVideo - text to video",
                                        "848x480 - 73 frames - 30 steps",
                                        ("Load Diffusion Model", "ClusCa", "KSampler", "VAE Decode", "Save Video")),
    "tiny_reference_model": Spec(tiny_reference, "Tiny reference model", "bundled weights - no downloads - CPU",
                                 ("Reference Loader", "ClusCa", "KSampler", "Reference Decode", "Save Image")),
    "qwen_image_text_to_image": Spec(qwen_image, "Qwen-Image - text to image", "1328x1328 - 20 steps - ClusCa 4x",
                                     IMAGE_CHAIN),
    "qwen_image_edit_2509": Spec(qwen_image_edit, "Qwen-Image-Edit 2509 - image edit",
                                 "references cached with the image - 20 steps",
                                 ("Load Image", "ClusCa", "KSampler", "VAE Decode", "Save Image")),
    "flux2_klein_text_to_image": Spec(flux2_klein, "FLUX.2 Klein 4B - text to image", "1024x1024 - 20 steps - CFG 5",
                                      ("Load Diffusion Model", "ClusCa", "CFG Guider", "Custom Sampler",
                                       "Save Image")),
    "z_image_turbo_text_to_image": Spec(z_image_turbo, "Z-Image Turbo - text to image",
                                        "1024x1024 - 8 steps - ClusCa 2x", IMAGE_CHAIN),
    "wan22_ti2v_5b_text_to_video": Spec(wan22_ti2v_5b, "Wan 2.2 TI2V 5B - text to video",
                                        "1280x704 - 121 frames - 20 steps",
                                        ("Load Diffusion Model", "ClusCa", "KSampler", "VAE Decode", "Save Video")),
    "wan22_14b_image_to_video": Spec(wan22_14b_i2v, "Wan 2.2 14B - image to video",
                                     "two experts - a ClusCa node each - 20 steps",
                                     ("Load Image", "ClusCa high noise", "ClusCa low noise", "2 KSampler Advanced",
                                      "Save Video")),
    "ltx2_text_to_video": Spec(ltx2, "LTX-2 - text to video with sound", "768x512 - 97 frames - 20 steps",
                               ("Load Checkpoint", "ClusCa", "CFG Guider", "Custom Sampler", "Save Video"),
                               comfyui="0.33.0"),
}


def draw_thumbnail(title: str, subtitle: str, chain: list, palette, size=(512, 320)):
    from PIL import Image, ImageDraw, ImageFont
    w, h = size
    img = Image.new("RGB", size, (24, 26, 30))
    d = ImageDraw.Draw(img)
    big, small, tiny = (ImageFont.load_default(size=s) for s in (26, 16, 13))
    d.text((20, 18), title, fill=(235, 240, 242), font=big)
    d.text((20, 56), subtitle, fill=(150, 200, 210), font=small)
    # a cluster map: token cells coloured by the nearest of a few seeds (what K-means regions look like)
    cols, rows, cell = 32, 7, 12
    x0, y0 = (w - cols * cell) // 2, 90
    seeds = [((i * 7919) % cols, (i * 104729) % rows) for i in range(1, 10)]
    for r in range(rows):
        for c in range(cols):
            k = min(range(len(seeds)), key=lambda i: (seeds[i][0] - c) ** 2 + 3 * (seeds[i][1] - r) ** 2)
            color = tuple(int(255 * v) for v in palette[k % len(palette)])
            d.rectangle([x0 + c * cell, y0 + r * cell, x0 + (c + 1) * cell - 1, y0 + (r + 1) * cell - 1], fill=color)
    # node chain
    n = len(chain)
    bw, by, bh = 82, 198, 64
    gap = (w - 40 - n * bw) // max(n - 1, 1)
    for i, label in enumerate(chain):
        x = 20 + i * (bw + gap)
        is_clusca = "ClusCa" in label
        fill, outline = ((43, 107, 118), (120, 220, 235)) if is_clusca else ((52, 55, 62), (95, 100, 110))
        d.rounded_rectangle([x, by, x + bw, by + bh], radius=8, fill=fill, outline=outline, width=2)
        words, lines = label.split(), []
        for word in words:
            if lines and d.textlength(lines[-1] + " " + word, font=tiny) <= bw - 10:
                lines[-1] += " " + word
            else:
                lines.append(word)
        ty = by + (bh - 16 * len(lines)) // 2
        for line in lines:
            d.text((x + (bw - d.textlength(line, font=tiny)) / 2, ty), line, fill=(240, 244, 245), font=tiny)
            ty += 16
        if i < n - 1:
            ax = x + bw + 3
            d.line([ax, by + bh / 2, ax + gap - 6, by + bh / 2], fill=(150, 155, 160), width=2)
            d.polygon([(ax + gap - 6, by + bh / 2 - 5), (ax + gap - 1, by + bh / 2), (ax + gap - 6, by + bh / 2 + 5)],
                      fill=(150, 155, 160))
    d.text((20, h - 30), "ComfyUI-ClusCa - cluster-driven feature caching", fill=(110, 115, 122), font=tiny)
    return img


def build_all(names=None, tree=None) -> dict:
    """{name: (workflow json, thumbnail JPEG bytes)} of the workflows generated on ``tree`` (default: the tree
    in use); the others are left out with a line saying which tree writes them."""
    from .workflow_api import load_all_nodes, object_info_in_process
    load_all_nodes()
    from .comfy_env import pack_module
    palette = pack_module("nodes.cluster_map").cluster_colors(16).tolist()
    oi = object_info_in_process()
    tree = tree or comfyui_version()
    out = {}
    for name, spec in SPECS.items():
        if names and name not in names:
            continue
        if spec.comfyui != tree:
            print(f"left out {name}: generated on ComfyUI {spec.comfyui} (COMFYUI={spec.comfyui}), this is {tree}",
                  file=sys.stderr)
            continue
        wf = spec.builder(oi).to_json()
        buf = io.BytesIO()
        draw_thumbnail(spec.title, spec.subtitle, list(spec.chain), palette).save(buf, "JPEG", quality=85,
                                                                                 optimize=True)
        out[name] = (wf, buf.getvalue())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="only these workflows")
    ap.add_argument("--check", action="store_true", help="report files that differ, write nothing")
    args = ap.parse_args(argv)
    built = build_all(args.names)
    WORKFLOWS.mkdir(exist_ok=True)
    differ = []
    for name, (wf, jpg) in built.items():
        text = json.dumps(wf, indent=2) + "\n"
        path = WORKFLOWS / f"{name}.json"
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                differ.append(path.name)
            continue
        path.write_text(text, encoding="utf-8")
        (WORKFLOWS / f"{name}.jpg").write_bytes(jpg)
        print(f"wrote {path.relative_to(REPO)} and {name}.jpg ({len(jpg) // 1024} KiB)")
    if differ:
        print("out of date: " + ", ".join(differ))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

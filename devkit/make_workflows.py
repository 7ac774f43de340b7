"""Generates the example workflows in ``workflows/`` (UI format) and their thumbnails.

    .venv/bin/python -m devkit.make_workflows            # all of them
    .venv/bin/python -m devkit.make_workflows --check    # fail if a file differs from what would be written

The node layout, sockets and widget values come from the node definitions of the real ComfyUI with this pack
loaded (``devkit.workflow_api.load_all_nodes``). Thumbnails are drawn with PIL: the workflow's chain of nodes
with Apply ClusCa highlighted.
"""

from __future__ import annotations

import argparse
import io
import json
import sys

from .comfy_env import REPO
from .workflow_builder import UIWorkflow

WORKFLOWS = REPO / "workflows"
CLUSCA_COLOR, CLUSCA_BGCOLOR = "#1d4a52", "#2b6b76"

HF = "https://huggingface.co"
FLUX_TEXT = f"{HF}/comfyanonymous/flux_text_encoders/resolve/main"
HY = f"{HF}/Comfy-Org/HunyuanVideo_repackaged/resolve/main/split_files"


def model(name, directory, url=None) -> dict:
    entry = {"name": name, "directory": directory}
    if url:
        entry["url"] = url
    return entry


FLUX_CLIP_MODELS = [model("clip_l.safetensors", "text_encoders", f"{FLUX_TEXT}/clip_l.safetensors"),
                    model("t5xxl_fp16.safetensors", "text_encoders", f"{FLUX_TEXT}/t5xxl_fp16.safetensors")]
FLUX_VAE = model("ae.safetensors", "vae", f"{HF}/black-forest-labs/FLUX.1-schnell/resolve/main/ae.safetensors")


def clusca(wf, pos, **widgets):
    return wf.add("ApplyClusCa", pos, widgets, color=CLUSCA_COLOR, bgcolor=CLUSCA_BGCOLOR)


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
        "Apply ClusCa sits between the model loader and the sampler. At its defaults, 50 steps run 12 in full "
        "and 38 from the cache (schedule bound 4.2x). The node shows the run's statistics, and the cluster map "
        "which image tokens ClusCa grouped. For the uncached image, bypass Apply ClusCa and ClusCa Cluster Map "
        "(select both, Ctrl+B): the map needs a ClusCa model.",
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
        "tokens. 30 steps at the defaults: 9 full + 21 cached.",
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
        "Pick the class by index (207 = golden retriever) or by name. Apply ClusCa left at its defaults uses the "
        "DiT reference settings (interval 4, warm-up 2). 50 DDIM steps, CFG 4.",
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
        "848x480, 73 frames, 30 steps. Apply ClusCa left at its defaults uses the HunyuanVideo reference "
        "settings (interval 5, warm-up 1, 32 clusters); cluster_per_frame clusters every latent frame on its "
        "own. The cluster map is saved as a second video, frame by frame.",
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
    video = wf.add("CreateVideo", (1950, 20), {"fps": 24.0})
    wf.link(decode, 0, video, "images")
    save = wf.add("SaveVideo", (2300, 20), {"filename_prefix": "ClusCa/hunyuan_video"}, size=(400, 360))
    wf.link(video, 0, save, "video")
    cmap = wf.add("ClusCaClusterMap", (1600, 420), color=CLUSCA_COLOR, bgcolor=CLUSCA_BGCOLOR)
    wf.link(cc, 0, cmap, "model")
    wf.link(sampler, 0, cmap, "samples")
    wf.link(decode, 0, cmap, "image")
    map_video = wf.add("CreateVideo", (1950, 420), {"fps": 24.0})
    wf.link(cmap, 0, map_video, "images")
    map_save = wf.add("SaveVideo", (2300, 420), {"filename_prefix": "ClusCa/hunyuan_video_clusters"},
                      size=(400, 360))
    wf.link(map_video, 0, map_save, "video")
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
        "Apply ClusCa shows the run's statistics; the cluster map shows the token clusters. To compare without "
        "ClusCa, bypass Apply ClusCa and ClusCa Cluster Map (select both, Ctrl+B) and queue again.",
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


# name -> (builder, thumbnail title, thumbnail subtitle, the chain of node labels drawn)
SPECS = {
    "flux_dev_text_to_image": (flux_dev, "FLUX.1 dev - text to image", "1024x1024 - 50 steps - 12 full + 38 cached",
                               ["Load Diffusion Model", "Apply ClusCa", "KSampler", "VAE Decode", "Save Image"]),
    "flux_kontext_edit": (flux_kontext, "FLUX.1 Kontext - image edit", "reference image in full - 30 steps",
                          ["Load Image", "Apply ClusCa", "KSampler", "VAE Decode", "Save Image"]),
    "dit_xl2_class_to_image": (dit_xl, "DiT-XL/2 - class to image", "ImageNet 256x256 - 50 DDIM steps - CFG 4",
                               ["Load DiT Checkpoint", "Apply ClusCa", "KSampler", "VAE Decode", "Save Image"]),
    "hunyuan_video_text_to_video": (hunyuan_video, "HunyuanVideo - text to video", "848x480 - 73 frames - 30 steps",
                                    ["Load Diffusion Model", "Apply ClusCa", "KSampler", "VAE Decode", "Save Video"]),
    "tiny_reference_model": (tiny_reference, "Tiny reference model", "bundled weights - no downloads - CPU",
                             ["Reference Loader", "Apply ClusCa", "KSampler", "Reference Decode", "Save Image"]),
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


def build_all(names=None) -> dict:
    """{name: (workflow json, thumbnail JPEG bytes)}; workflows whose nodes are not loaded are left out."""
    from .workflow_api import load_all_nodes, object_info_in_process
    load_all_nodes()
    from .comfy_env import pack_module
    palette = pack_module("nodes.cluster_map").cluster_colors(16).tolist()
    oi = object_info_in_process()
    out = {}
    for name, (builder, title, subtitle, chain) in SPECS.items():
        if names and name not in names:
            continue
        try:
            wf = builder(oi).to_json()
        except KeyError as exc:
            print(f"skipped {name}: {exc}", file=sys.stderr)
            continue
        buf = io.BytesIO()
        draw_thumbnail(title, subtitle, chain, palette).save(buf, "JPEG", quality=85, optimize=True)
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

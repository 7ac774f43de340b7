"""Nodes of the reference models: load one, turn a prompt into its conditioning and latent, decode its latents.

Node ids and input names are a contract that example workflows depend on: ``ClusCaReferenceModelLoader``
(``model_name``), ``ClusCaReferencePrompt`` (``reference``, ``prompt``, ``negative_prompt``, ``batch_size``),
``ClusCaReferenceDecode`` (``reference``, ``samples``).
"""

from __future__ import annotations

from comfy_api.latest import io

from .loader import list_reference_models, load_reference_model
from .spec import PromptError

CATEGORY = "ClusCa/Reference"
#: the reference model's spec travels between the nodes as this custom type
Reference = io.Custom("CLUSCA_REFERENCE")


class ClusCaReferenceModelLoader(io.ComfyNode):
    """Loads one of the small trained reference models bundled with ClusCa (no VAE or text encoder needed)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ClusCaReferenceModelLoader",
            display_name="Load ClusCa Reference Model",
            category=CATEGORY,
            description=("Loads a small FLUX, FLUX.2, Qwen-Image, HunyuanVideo, Wan or DiT model trained on coloured "
                         "shapes, bundled with ClusCa for benchmarks and example workflows. Use 'ClusCa Reference Prompt' for its "
                         "conditioning and latent and 'ClusCa Reference Decode' to turn its latents into images."),
            inputs=[
                io.Combo.Input("model_name", options=list_reference_models(),
                               tooltip="The bundled reference model (file in the pack's reference_models folder)."),
            ],
            outputs=[
                io.Model.Output(tooltip="The diffusion model; connect it to Apply ClusCa or the sampler."),
                Reference.Output(display_name="reference",
                                 tooltip="The model's vocabulary, latent size and decoder, for the prompt and "
                                         "decode nodes."),
            ],
        )

    @classmethod
    def execute(cls, model_name) -> io.NodeOutput:
        model, spec = load_reference_model(model_name)
        return io.NodeOutput(model, spec)


class ClusCaReferencePrompt(io.ComfyNode):
    """A prompt for a reference model: positive and negative conditioning plus an empty latent of its size."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ClusCaReferencePrompt",
            display_name="ClusCa Reference Prompt",
            category=CATEGORY,
            description=("Encodes a prompt over the reference model's small vocabulary (e.g. 'red circle', "
                         "'blue square moving left') and makes the empty latent to sample into."),
            inputs=[
                Reference.Input("reference", tooltip="The 'reference' output of 'Load ClusCa Reference Model'."),
                io.String.Input("prompt", default="red circle", multiline=False,
                                tooltip="Words from the model's vocabulary: a colour (red, green, blue, yellow, "
                                        "magenta, cyan) and a shape (circle, square, triangle, ring); the video "
                                        "models also take 'moving left/right/up/down'. Unknown words are refused "
                                        "with the vocabulary listed."),
                io.String.Input("negative_prompt", default="", multiline=False,
                                tooltip="Negative prompt; empty = the unconditional input the model was trained "
                                        "with (the usual choice for CFG)."),
                io.Int.Input("batch_size", default=1, min=1, max=64, step=1,
                             tooltip="Number of latents (images or videos) to sample."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive", tooltip="Connect to the sampler's positive input."),
                io.Conditioning.Output(display_name="negative", tooltip="Connect to the sampler's negative input."),
                io.Latent.Output(display_name="latent",
                                 tooltip="An empty latent of the model's trained size (video: its trained frame "
                                         "count); connect to the sampler's latent_image."),
            ],
        )

    @classmethod
    def validate_inputs(cls, prompt=None, negative_prompt=None, batch_size=None, **kwargs):
        if batch_size is not None and batch_size < 1:
            return "batch_size must be at least 1"
        return True

    @classmethod
    def execute(cls, reference, prompt, negative_prompt="", batch_size=1) -> io.NodeOutput:
        try:
            positive, negative = reference.conditioning(prompt, 1, negative=negative_prompt)
        except PromptError as exc:
            raise ValueError(str(exc)) from None
        return io.NodeOutput(positive, negative, reference.empty_latent(int(batch_size)))


class ClusCaReferenceDecode(io.ComfyNode):
    """Turns a reference model's latents into images (the exact inverse of its pixel latent mapping)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ClusCaReferenceDecode",
            display_name="ClusCa Reference Decode",
            category=CATEGORY,
            description=("Decodes the latents of a reference model to images; a video's frames come out as an "
                         "image batch (sample by sample, frame by frame)."),
            inputs=[
                Reference.Input("reference", tooltip="The 'reference' output of 'Load ClusCa Reference Model'."),
                io.Latent.Input("samples", tooltip="Latents sampled with this reference model."),
            ],
            outputs=[io.Image.Output(tooltip="The decoded images (video frames as a batch).")],
        )

    @classmethod
    def execute(cls, reference, samples) -> io.NodeOutput:
        return io.NodeOutput(reference.decode(samples))


NODES = [ClusCaReferenceModelLoader, ClusCaReferencePrompt, ClusCaReferenceDecode]

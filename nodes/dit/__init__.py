"""Class-conditional DiT (DiT-XL/2 and the other ImageNet DiT sizes) for ComfyUI, brought by this pack since
ComfyUI has no native DiT: the model (``model``), its ComfyUI model config (``config``), the checkpoint
loader node (``loader``) and the class-label node (``labels``)."""

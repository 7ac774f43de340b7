"""Development helpers shared by the tests, the demo and the benchmarks (not used by the node pack):
real ComfyUI on CPU (:mod:`.comfy_env`), tiny models of the supported families (:mod:`.tiny_models`)."""

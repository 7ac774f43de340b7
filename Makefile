# ComfyUI-ClusCa developer commands. Every target prepares its own environment first (idempotent).
PY := .venv/bin/python
export OMP_NUM_THREADS ?= 2

.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup_env.sh

# a real headless ComfyUI server (127.0.0.1, CPU) runs the tiny example workflow without and with ClusCa
demo: setup
	$(PY) -m devkit.demo

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) -m benchmarks.speed

clean:
	rm -rf .venv .comfyui out

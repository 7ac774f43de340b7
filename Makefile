# ComfyUI-ClusCa developer commands. Every target prepares its own environment first (idempotent).
PY := .venv/bin/python
export OMP_NUM_THREADS ?= 2
# the ComfyUI trees `make test` runs the suite against (each one a full pytest run); e.g. COMFYUI=0.33.0
COMFYUI ?= 0.3.75 0.33.0

.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup_env.sh

# a real headless ComfyUI server (127.0.0.1, CPU) runs the tiny example workflow without and with ClusCa
demo: setup
	$(PY) -m devkit.demo

# the whole suite once per ComfyUI version (every version runs even when an earlier one fails), then one
# closing line with the counts of all runs; PYTEST_ARGS go to each pytest run
test: setup
	$(PY) -m devkit.run_suite --comfyui $(COMFYUI) -- $(PYTEST_ARGS)

bench: setup
	$(PY) -m benchmarks.speed

clean:
	rm -rf .venv .comfyui out

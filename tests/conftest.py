import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
# clusca_core and devkit are importable from the repo root; it goes last so that ComfyUI's top-level
# ``nodes`` module (put first on sys.path by devkit.comfy_env) is never shadowed by this pack's ``nodes``.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

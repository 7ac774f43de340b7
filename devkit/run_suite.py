"""Run the test suite once per ComfyUI version (``make test``) and print one closing line for all of them.

Each version is a separate pytest process (``COMFYUI=<version>``: ComfyUI is imported once per process). Every
version runs even when an earlier one fails; the exit status is non-zero when any failed. The counts come from
each run's JUnit XML report (``out/tests/<version>.xml``).

    python -m devkit.run_suite                      # 0.3.75 and 0.33.0
    python -m devkit.run_suite --comfyui 0.33.0 -- -k flux -x
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

from .comfy_env import COMFYUI_VERSIONS, REPO


def counts(report) -> dict:
    """passed / failed / skipped of a JUnit XML report (errors count as failed)."""
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in total:
            total[key] += int(suite.get(key, 0))
    failed = total["failures"] + total["errors"]
    return {"passed": total["tests"] - failed - total["skipped"], "failed": failed, "skipped": total["skipped"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", nargs="+", default=list(COMFYUI_VERSIONS), choices=COMFYUI_VERSIONS,
                    help="the ComfyUI versions to test against (default: all)")
    ap.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = ap.parse_args(argv)
    out = REPO / "out" / "tests"
    out.mkdir(parents=True, exist_ok=True)
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    status = 0
    lines = []
    for version in args.comfyui:
        report = out / f"{version}.xml"
        report.unlink(missing_ok=True)
        print(f"=== ComfyUI {version} ===", flush=True)
        env = dict(os.environ, COMFYUI=version)
        env.pop("CLUSCA_COMFYUI_DIR", None)
        rc = subprocess.call([sys.executable, "-m", "pytest", f"--junitxml={report}", *args.pytest_args],
                             cwd=REPO, env=env)
        if rc != 0:
            status = 1
        if report.exists():
            c = counts(report)
        else:   # pytest could not even collect: count the whole run as one failure
            c = {"passed": 0, "failed": 1, "skipped": 0}
        if rc != 0 and c["failed"] == 0:
            c["failed"] = 1
        for k in totals:
            totals[k] += c[k]
        lines.append(f"ComfyUI {version}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped")
    print("\n".join(lines))
    print(f"{totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped")
    return status


if __name__ == "__main__":
    sys.exit(main())

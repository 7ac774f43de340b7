"""Registry metadata in pyproject.toml: the licence file it names exists and is the GPL-3.0 (the pack imports
ComfyUI, which is GPL-3.0), in the form the Comfy Registry documents (``license = { file = "LICENSE" }``)."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_license_file_named_by_pyproject_exists_and_is_gpl3():
    license_entry = _pyproject()["project"].get("license")
    # the registry spec accepts { file = "..." } or { text = "..." }; a bare string is documented as wrong
    assert isinstance(license_entry, dict) and "file" in license_entry, \
        f"pyproject's license must be {{ file = \"LICENSE\" }}; got {license_entry!r}"
    path = REPO / license_entry["file"]
    assert path.is_file(), f"pyproject.toml names the licence file {license_entry['file']!r}, which does not exist"
    text = path.read_text(encoding="utf-8")
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 3, 29 June 2007" in text, \
        f"{path.name} is not the GNU GPL version 3"
    assert "TERMS AND CONDITIONS" in text and "END OF TERMS AND CONDITIONS" in text, \
        f"{path.name} does not hold the full GPL-3.0 text"


def test_registry_fields():
    data = _pyproject()
    project, comfy = data["project"], data["tool"]["comfy"]
    for key in ("name", "version", "description"):
        assert project.get(key), f"[project] {key} is empty"
    assert project.get("urls", {}).get("Repository"), "[project.urls] Repository is required by the registry"
    for key in ("PublisherId", "DisplayName"):
        assert comfy.get(key), f"[tool.comfy] {key} is empty"

"""Every module of the project is in one of the layers of pyproject.toml's import-linter
contract, so ``lint-imports`` (run by ``make test``) holds each of them to the direction of
dependencies: a module nobody placed would be checked by nothing."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gaitweb", "jobs", "approvals", "packs")


def _layer_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [m.strip() for layer in layers["layers"] for m in layer.replace("|", ":").split(":")]


def _project_modules(*, packages: bool = False) -> list[str]:
    """The project's modules (``packages``: with the packages themselves), without migrations."""
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "migrations" in parts:
                continue
            if parts[-1] == "__init__":
                if packages:
                    names.append(".".join(parts[:-1]))
                continue
            names.append(".".join(parts))
    return names


def test_every_module_is_in_a_layer() -> None:
    placed = _layer_modules()
    unplaced = [
        m for m in _project_modules() if not any(m == p or m.startswith(p + ".") for p in placed)
    ]
    assert unplaced == []


def test_every_layer_names_a_module_that_exists() -> None:
    existing = set(_project_modules(packages=True))
    assert [m for m in _layer_modules() if m not in existing] == []

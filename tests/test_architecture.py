"""Imports flow one way.

schemas <- corpora, normalizers, encoders <- pipelines, training <- voxshard.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "corpora", "normalizers", "encoders", "pipelines", "training", "voxshard")
ALLOWED = {
    "schemas": set(),
    "corpora": {"schemas"},
    "normalizers": {"schemas"},
    "encoders": {"schemas"},
    "pipelines": {"schemas", "corpora", "normalizers", "encoders"},
    "training": {"schemas", "encoders"},
    "voxshard": {"schemas", "corpora", "normalizers", "encoders", "pipelines", "training"},
}


def layer(module: str) -> str | None:
    """The layer of an absolute module name: voxshard.<folder>... -> <folder>, other voxshard
    modules -> voxshard (the CLI), anything else -> None."""
    parts = module.split(".")
    if parts[0] != "voxshard":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else "voxshard"


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.append(node.module)
            modules.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in map(layer, modules) if name is not None}


def test_no_generic_top_level_imports() -> None:
    """Every folder installs under voxshard.: importing `schemas` would load another
    distribution's package of that name."""
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = (
                    [alias.name for alias in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module]
                    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                    else []
                )
                bare = [n for n in names if n.split(".")[0] in PACKAGES[:-1]]
                assert not bare, f"{path.relative_to(REPO)} imports {bare}: use voxshard.<name>"


@pytest.mark.parametrize("package", [p for p in PACKAGES if (REPO / p).is_dir()])
def test_imports_flow_one_way(package: str) -> None:
    for path in sorted((REPO / package).rglob("*.py")):
        illegal = imported_packages(path) - ALLOWED[package] - {package}
        assert not illegal, f"{path.relative_to(REPO)} imports {sorted(illegal)}"


def test_heavy_imports_stay_out_of_the_cli_module() -> None:
    imported = {
        node.names[0].name if isinstance(node, ast.Import) else node.module
        for node in ast.parse((REPO / "voxshard" / "cli.py").read_text()).body
        if isinstance(node, ast.Import | ast.ImportFrom)
    }
    assert not {m for m in imported if m and m.split(".")[0] in {"apache_beam", "torch", "pyarrow"}}

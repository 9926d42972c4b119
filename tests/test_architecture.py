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


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(PACKAGES)


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

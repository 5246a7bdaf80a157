"""Dependencies flow one way: shared types <- perception <- fusion <- generation <- API/CLI <- demo."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Modules each layer may not import (the layers above it).
FORBIDDEN = {
    "perception": ("fusion", "generation", "demo", "affectlens.analyzer", "affectlens.cli", "affectlens.evaluation"),
    "fusion": ("generation", "demo", "affectlens.analyzer", "affectlens.cli"),
    "generation": ("demo", "affectlens.analyzer", "affectlens.cli"),
}
SHARED = (
    "affectlens/types.py",
    "affectlens/tree.py",
    "affectlens/labels.py",
    "affectlens/errors.py",
    "affectlens/registry.py",
    "affectlens/weights.py",
)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_do_not_import_upwards(layer: str) -> None:
    for path in (REPO / layer).rglob("*.py"):
        bad = {m for m in _imports(path) for f in FORBIDDEN[layer] if m == f or m.startswith(f + ".")}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_shared_modules_import_no_pipeline_code() -> None:
    for rel in SHARED:
        bad = {m for m in _imports(REPO / rel) if m.split(".")[0] in {"perception", "fusion", "generation", "demo"}}
        assert not bad, f"{rel} imports {sorted(bad)}"


def test_library_never_prints() -> None:
    for layer in ("affectlens", "perception", "fusion", "generation", "demo"):
        for path in (REPO / layer).rglob("*.py"):
            if path.name == "cli.py":
                continue
            calls = [
                n
                for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print"
            ]
            assert not calls, f"{path.relative_to(REPO)} calls print(); log instead"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "./run test" in readme and "exec ./run test" in ci


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, affectlens; print(any(m in sys.modules for m in ('torch', 'onnxruntime', 'gradio', 'cv2')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_missing_shared_data_fails_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests import conftest

    monkeypatch.setattr(conftest, "SHARED_DATA", tmp_path / "absent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="is missing"):
        conftest.require_shared("fer2013.npz")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        conftest.require_shared("fer2013.npz")

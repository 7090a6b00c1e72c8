"""Imports point down the layering: cli <- ops, optim <- model <- distributed/data <- eval,
export.py <- config.py <- train <- infer <- launchers (cli, what every command shares with the
terminal, sits below everything; export.py reads and writes exports). config.py imports the
kinds it types its keys with from the layers below it, never from train/ or infer/. The public
API (api/) sits above model/, data/ and export.py and below the server (serve/) and the
launchers; neither imports train/, infer/ or eval/, and nothing below imports them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cllm4rec_dist"

# package folder (or top-level module) -> packages it must not import
FORBIDDEN = {
    "cli": (
        "ops",
        "optim",
        "model",
        "distributed",
        "data",
        "eval",
        "export",
        "train",
        "infer",
        "baselines",
        "planning",
        "config",
        "api",
        "serve",
    ),  # fmt: skip
    "ops": (
        "infer",
        "train",
        "eval",
        "data",
        "distributed",
        "model",
        "optim",
        "config",
        "api",
        "serve",
    ),
    "optim": (
        "infer",
        "train",
        "eval",
        "data",
        "distributed",
        "model",
        "ops",
        "config",
        "api",
        "serve",
    ),
    "model": ("infer", "train", "eval", "data", "distributed", "api", "serve"),
    "distributed": ("infer", "train", "eval", "data", "api", "serve"),
    "data": ("infer", "train", "eval", "api", "serve"),
    "eval": ("infer", "train", "api", "serve"),
    "export.py": ("infer", "train", "eval", "config", "api", "serve"),
    "config.py": ("infer", "train", "api", "serve"),
    "train": ("infer", "api", "serve"),
    "infer": ("api", "serve"),
    "api": ("train", "infer", "eval", "serve"),
    "serve": ("train", "infer", "eval"),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_upward_imports(layer):
    root = PACKAGE / layer
    paths = [root] if root.is_file() else sorted(root.rglob("*.py"))
    assert paths, f"{layer} holds no module"
    bad = []
    for path in paths:
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "cllm4rec_dist" and len(parts) > 1 and parts[1] in FORBIDDEN[layer]:
                bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not bad, bad

"""The package's layering, read from the imports in the source: the CLI on top (nothing imports aha.cli), data/
below the demo (it never imports aha.demo), and the pure layers (algos/, rewards/) free of config objects."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "aha"


def imports(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved), at any depth."""
    package = ["aha", *path.relative_to(SRC).parent.parts]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names)
    return out


def modules(under: str = "") -> list[Path]:
    return sorted((SRC / under).rglob("*.py"))


def test_imports_resolve_relative_names():
    got = imports(SRC / "train" / "grpo.py")
    assert "aha.algos" in got and "aha.train.batching.build_batch" in got


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_nothing_below_the_cli_imports_it(path):
    if path.name in ("cli.py", "__main__.py") and path.parent == SRC:
        return
    assert not {m for m in imports(path) if m == "aha.cli" or m.startswith("aha.cli.")}, path


def test_data_does_not_import_the_demo():
    bad = {p.name: m for p in modules("data") for m in imports(p) if m.startswith("aha.demo")}
    assert not bad, bad


@pytest.mark.parametrize("layer", ["algos", "rewards"])
def test_pure_layers_take_no_config_objects(layer):
    for p in modules(layer):
        heavy = {m for m in imports(p) if m.startswith(("aha.config", "aha.schema", "aha.train"))}
        assert not heavy, (p, heavy)

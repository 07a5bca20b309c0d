"""The package's layering, checked by parsing its imports: each layer imports only the layers below it.

    constants, errors, io  <  assets  <  extractors  <  pipeline  <  datasets  <  app  <  cli
                                          fusion.ops  <  fusion   <  datasets

Lazy imports inside functions count too. ``cmamba/__init__.py`` (the public API) re-exports lazily and is exempt.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cmamba

PACKAGE = Path(cmamba.__file__).parent
REPO = PACKAGE.parent
BASE = {"cmamba.constants", "cmamba.errors", "cmamba.io", "cmamba.__version__"}
# layer (a module prefix) → the prefixes it may import besides itself and BASE
ALLOWED = {
    "cmamba.constants": set(),
    "cmamba.errors": set(),
    "cmamba.io": set(),
    "cmamba.assets": set(),
    "cmamba.extractors": {"cmamba.assets"},
    "cmamba.fusion.ops": set(),
    "cmamba.fusion": {"cmamba.fusion.ops"},
    "cmamba.pipeline": {"cmamba.assets", "cmamba.extractors"},
    "cmamba.datasets": {"cmamba.assets", "cmamba.extractors", "cmamba.pipeline", "cmamba.fusion"},
    "cmamba.app": {"cmamba.assets", "cmamba.extractors", "cmamba.pipeline", "cmamba.datasets", "cmamba.fusion"},
    "cmamba.cli": {"cmamba.assets", "cmamba.app", "cmamba.fusion.config"},
    "cmamba.__main__": {"cmamba.cli"},
}
# third-party packages a layer must not touch: extractors know no scheduler and no storage format
FORBIDDEN_THIRD_PARTY = {"cmamba.extractors": {"dask", "distributed", "pyarrow"}, "cmamba.fusion.ops": {"dask"}}
HEAVY = ("torch", "dask", "distributed", "pyarrow", "librosa", "transformers", "mediapipe", "av", "numba", "opensmile")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The modules ``path`` imports (``from cmamba import x`` counts as cmamba.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; cmamba imports absolutely (the layer rules read them)"
            if node.module == "cmamba":
                found.update(f"cmamba.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
    return found


def _layer(module: str) -> str:
    return max((prefix for prefix in ALLOWED if module == prefix or module.startswith(prefix + ".")), key=len)


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def _within(module: str, prefixes: set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(module: str, imported: set[str]) -> list[str]:
    """What ``module`` must not import among ``imported``."""
    layer = _layer(module)
    allowed = BASE | ALLOWED[layer] | {layer}
    internal = {m for m in imported if m == "cmamba" or m.startswith("cmamba.")}
    banned = {m for m in imported if m.split(".")[0] in FORBIDDEN_THIRD_PARTY.get(layer, set())}
    return sorted({m for m in internal if not _within(m, allowed)} | banned)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_follow_the_layers(path: Path):
    module = _module_name(path)
    wrong = violations(module, _imports(path))
    assert not wrong, f"{module} (layer {_layer(module)}) must not import {wrong}"


def test_the_rules_catch_violations(tmp_path):
    assert violations("cmamba.fusion.ops.cpu", {"torch", "cmamba.fusion.ops.coupled_scan", "cmamba.io"}) == []
    assert violations("cmamba.fusion.ops.cpu", {"cmamba.fusion.model"}) == ["cmamba.fusion.model"]
    assert violations("cmamba.extractors.video", {"cmamba.pipeline.run", "dask"}) == ["cmamba.pipeline.run", "dask"]
    assert violations("cmamba.pipeline.run", {"cmamba.app.score", "cmamba.cli"}) == ["cmamba.app.score", "cmamba.cli"]
    assert violations("cmamba.fusion.train", {"cmamba.datasets.memory"}) == ["cmamba.datasets.memory"]
    assert violations("cmamba.constants", {"cmamba"}) == ["cmamba"]
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from cmamba import fusion\n    import cmamba.app.score\n")
    assert _imports(bad) == {"cmamba.fusion", "cmamba.app.score"}  # lazy imports count
    bad.write_text("from .pipeline import run\n")
    with pytest.raises(AssertionError, match="relative import"):
        _imports(bad)


def test_every_package_says_what_lives_there_and_what_it_may_import():
    for init in sorted(PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 80, f"{init.relative_to(REPO)} needs a docstring saying what lives there"
        if init.parent != PACKAGE:
            said = re.search(r"\b(may import|imports?)\b", doc, re.IGNORECASE)  # not "importer"
            assert said, f"{init.relative_to(REPO)}: say what the package may import"


def _docs(path: Path) -> str:
    """The docstrings and comments of a Python file."""
    tree = ast.parse(path.read_text())
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docs = [ast.get_docstring(node) or "" for node in ast.walk(tree) if isinstance(node, kinds)]
    comments = [line.split("#", 1)[1] for line in path.read_text().splitlines() if "#" in line]
    return "\n".join(docs + comments)


def test_docstrings_cite_only_files_the_repository_contains():
    for path in [*PACKAGE.rglob("*.py"), *(REPO / "tests").rglob("*.py"), *(REPO / "bench").rglob("*.py")]:
        docs = _docs(path)
        for cited in re.findall(r"[\w./-]+\.md\b", docs):
            assert (REPO / cited).is_file(), f"{path.relative_to(REPO)} cites {cited}, which is not in the repository"
        for cited in re.findall(r"\b(?:[a-z_]+/)+[a-z_]+\.py\b", docs):  # package paths such as fusion/ops/cpu.py
            found = [base / cited for base in (REPO, PACKAGE, path.parent) if (base / cited).is_file()]
            assert found, f"{path.relative_to(REPO)} cites {cited}, which is not in the repository"


@pytest.mark.parametrize("module", ["cmamba", "cmamba.cli", "cmamba.app.config", "cmamba.pipeline.config"])
def test_light_imports(module: str):
    """Parsing the command line, reading a config file and `import cmamba` load no heavy library."""
    code = f"import sys, {module}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.strip() == "[]", f"import {module} loads {done.stdout.strip()}"


def test_the_public_api_resolves_every_name():
    assert set(cmamba.__all__) == {"__version__", *cmamba._HOMES}
    for name in cmamba.__all__:
        assert getattr(cmamba, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'scan'"):
        cmamba.scan  # noqa: B018

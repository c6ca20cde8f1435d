"""The code is ruff clean (the configuration is in pyproject.toml)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it comes with the [test] extra)")
    paths = ["xrayest", "tests", "benchmarks", "examples", "docs", "_xrayest_startup.py", "setup.py"]
    result = subprocess.run([ruff, "check", *paths], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def _bands():
    """Modules of docs/design.md's map, band by band (bands are separated by the arrows)."""
    import re

    text = (ROOT / "docs" / "design.md").read_text()
    picture = text.split("```")[1]
    bands, current = [], []
    for line in picture.splitlines():
        if "▼" in line and current:
            bands.append(current)
            current = []
        current += re.findall(r"\b(\w+)\.py\b", line)
    bands.append(current)
    return {module: i for i, band in enumerate(bands) for module in band}


def test_imports_only_go_down_the_module_map():
    import re

    band = _bands()
    modules = {p.stem for p in (ROOT / "xrayest").glob("*.py")} - {"__init__", "__main__"}
    assert modules <= set(band), f"modules missing from docs/design.md's map: {sorted(modules - set(band))}"
    upward = []
    for module in sorted(modules):
        source = (ROOT / "xrayest" / f"{module}.py").read_text()
        imported_names = re.findall(r"^\s*from \.(\w+) import", source, flags=re.M)
        for names in re.findall(r"^\s*from \. import ([\w, ]+)", source, flags=re.M):
            imported_names += [n.strip() for n in names.split(",")]
        for imported in imported_names:
            if band[imported] > band[module]:
                upward.append(f"{module} (band {band[module]}) imports {imported} (band {band[imported]})")
    assert not upward, upward


# Where a user's ``backbone`` (a name, a spec or a keras.Model) enters and is resolved, once; the registry
# module defines the resolver.  Everything below takes the resolved spec or model.
_BACKBONE_BOUNDARY = {"classifier", "extractor", "distributed", "backbones"}
_RESOLVERS = {"backbone_spec_or_model", "get_backbone_spec"}


def test_below_the_boundary_nothing_resolves_a_backbone_name_again():
    import ast

    calls = []
    for path in sorted((ROOT / "xrayest").glob("*.py")):
        if path.stem in _BACKBONE_BOUNDARY:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in _RESOLVERS:
                    calls.append(f"{path.name}:{node.lineno} calls {name}")
    assert not calls, calls

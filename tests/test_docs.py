"""The documentation site builds with no warnings, nitpicky (every cross-reference resolves), its gallery
running every example in quick mode."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("plot_*.py"))
# what an example may import: the standard library's modules it uses and installed packages
ALLOWED_IMPORTS = {"argparse", "time", "pathlib", "numpy", "pandas", "matplotlib", "sklearn", "scipy", "keras",
                   "xrayest"}


@pytest.mark.slow
def test_site_builds_without_warnings_and_runs_the_gallery(tmp_path):
    for module in ("sphinx", "numpydoc", "sphinx_gallery", "myst_parser", "pydata_sphinx_theme"):
        pytest.importorskip(module, reason='the [docs] extra is not installed: pip install ".[docs]"')
    out = tmp_path / "html"
    env = {**os.environ, "XRAYEST_DOCS_FULL": "0"}
    status = ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=all"]
    before = subprocess.run(status, capture_output=True, text=True).stdout
    result = subprocess.run([sys.executable, "-m", "sphinx", "-n", "-W", "--keep-going", "-b", "html", "-d",
                             str(tmp_path / "doctrees"), str(ROOT / "docs"), str(out)],
                            check=False, capture_output=True, text=True, env=env, timeout=1500)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    assert subprocess.run(status, capture_output=True, text=True).stdout == before  # the checkout is unchanged
    for page in ("index.html", "api.html", "generated/xrayest.XrayCNNClassifier.html", "scaling.html",
                 "reports.html", "auto_examples/index.html"):
        assert (out / page).is_file(), page
    assert len(EXAMPLES) == 6
    for example in EXAMPLES:
        html = (out / "auto_examples" / f"{example.stem}.html").read_text()
        assert "Traceback" not in html
        if (ROOT.parent / "shared" / "data" / "bu_cs542").is_dir():  # the examples ran on the real images
            assert "quick mode" in html and 'class="dataframe"' in html, example.name  # a rendered table
            figures = list((out / "_images").glob(f"sphx_glr_{example.stem}_0*.png"))
            assert len(figures) == 1, f"{example.name} draws one figure; the site has {len(figures)}"
    api = (out / "generated/xrayest.XrayCNNClassifier.html").read_text()
    assert "predict_proba" in api and "Parameters" in api
    for method in ("fit", "predict_proba", "save"):  # methods have their own entries, which references link to
        assert f'id="xrayest.XrayCNNClassifier.{method}"' in api, method
    assert "set_fit_request" not in api  # scikit-learn's generated metadata-routing methods are left out


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_example_has_a_gallery_title_and_a_quick_mode(example):
    text = example.read_text()
    lines = text.splitlines()
    assert lines[0] == '"""' and set(lines[2]) == {"="} and len(lines[2]) >= len(lines[1]), "an RST title first"
    assert "args.quick" in text and "--data" in text
    code = text[text.index('"""', 3) + 3:]
    assert max(map(len, code.splitlines())) <= 95, "code lines fit the page (docs/_static/xrayest.css)"
    # self-contained, as scikit-learn's gallery: no helper module of the examples to open
    assert not [m for m in re.findall(r"^\s*(?:from|import) (\S+)", text, re.M)
                if m.split(".")[0] not in ALLOWED_IMPORTS], example.name


def _render_results():
    import importlib.util

    spec = importlib.util.spec_from_file_location("render_results", ROOT / "benchmarks" / "render_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_measured_table_is_the_rendering_of_results_json():
    """Every measured number is written once (benchmarks/results.json); the README and RESULTS.md show it."""
    render_results = _render_results()
    for path, text in render_results.render().items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.name}'s measured table differs from benchmarks/results.json: run benchmarks/render_results.py")
    for row in render_results.load_rows():
        assert set(row) == {"key", "what", "result", "host", "date", "command"}, row
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", row["date"]) and "/" not in row["command"].split()[0], row


def test_a_recorded_result_replaces_its_row_and_is_rendered(tmp_path, monkeypatch):
    import shutil

    render_results = _render_results()
    for name, source in (("results.json", render_results.RESULTS_JSON), ("README.md", render_results.README),
                         ("RESULTS.md", render_results.RESULTS_MD)):
        shutil.copy(source, tmp_path / name)
    monkeypatch.setattr(render_results, "RESULTS_JSON", tmp_path / "results.json")
    monkeypatch.setattr(render_results, "README", tmp_path / "README.md")
    monkeypatch.setattr(render_results, "RESULTS_MD", tmp_path / "RESULTS.md")
    rows = render_results.load_rows()
    rows[0] = {**rows[0], "result": "1 s", "date": "2027-01-01"}
    render_results.save_rows(rows)
    assert render_results.main(["--check"]) == 1  # the README still says the old number
    assert render_results.main([]) == 0 and render_results.main(["--check"]) == 0
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert f"| {rows[0]['what']} | 1 s | {rows[0]['host']} | 2027-01-01," in readme


def test_the_readme_names_every_backbone_of_the_registry():
    from xrayest.backbones import BACKBONES

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    line = next(line for line in readme.splitlines() if line.startswith("- Backbones:"))
    block = readme[readme.index(line):readme.index("\n- ", readme.index(line) + 1)]
    missing = [name for name in BACKBONES if not re.search(rf"\b{name}\b", block)]
    assert not missing, f"README's backbone list lacks {missing}"

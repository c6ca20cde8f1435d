"""Sphinx configuration of the xrayest documentation site.

Build: ``pip install ".[docs]" && sphinx-build -n -W -b html docs docs/_build/html``.  The gallery runs
every ``examples/plot_*.py`` on the BU CS542 images (``../shared`` beside the repository; without them
the pages show the code only) with ``--quick`` (tiny data, random weights, seconds each);
``XRAYEST_DOCS_FULL=1`` runs them in full.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

import xrayest  # noqa: E402  (after the environment it reads at import)
from gallery_support import BU  # noqa: E402

project = "xrayest"
author = "the xrayest developers"
copyright = "2026, the xrayest developers"
release = version = xrayest.__version__ if hasattr(xrayest, "__version__") else "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "generated/*.examples", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.json", "auto_examples/*.md5"]
root_doc = "index"

# API reference: one page per public name, from the numpydoc docstrings
autosummary_generate = True
autodoc_default_options = {}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# Nitpicky: every cross-reference must resolve.  Names of other projects (numpy, scikit-learn, keras,
# pandas, Python) link through intersphinx when XRAYEST_DOCS_INTERSPHINX=1 (it downloads their
# inventories); offline builds, as in CI, show them as code without a link.
nitpicky = True
_EXTERNAL = r"(numpy|np|sklearn|keras|tensorflow|tf|pandas|pd|scipy|dask|zarr|pydicom|matplotlib)(\..*)?"
nitpick_ignore_regex = [(r"py:.*", _EXTERNAL)]
# Internal types that appear only in signatures (their docstrings say what they hold).
nitpick_ignore = [("py:class", "xrayest.feature_store.StoreRowImages")]
if os.environ.get("XRAYEST_DOCS_INTERSPHINX") == "1":
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "sklearn": ("https://scikit-learn.org/stable", None),
        "pandas": ("https://pandas.pydata.org/docs", None),
    }


def _skip_metadata_requests(app, what, name, obj, skip, options):
    """scikit-learn's generated set_fit_request / set_score_request methods are not xrayest's API, nor are
    the Keras hooks (``on_epoch_end``, ...) a callback implements without a docstring of its own."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    if name.startswith("on_") and getattr(obj, "__doc__", None) is None:
        return True
    return skip


def setup(app):
    app.connect("autodoc-skip-member", _skip_metadata_requests)


# user guide pages are markdown (also read on GitHub): headings get anchors for cross-page links
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    # without the BU images the example pages are built from their code, not run
    "plot_gallery": BU.is_dir(),
    "backreferences_dir": "generated/backreferences",
    "doc_module": ("xrayest",),
    "reset_argv": "gallery_support.reset_argv",
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "image_scrapers": ("gallery_support.figure_scraper", "matplotlib"),
    "show_memory": False,
    "min_reported_time": 1,
    "write_computation_times": False,  # no docs/sg_execution_times.rst: a build leaves the checkout unchanged
}

html_theme = "pydata_sphinx_theme"
html_title = "xrayest"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": [],
    # the gallery's pages give the width of the on-page table of contents to their code
    "secondary_sidebar_items": {"**": ["page-toc"],
                                **{f"auto_examples/{example.stem}": []
                                   for example in (HERE.parent / "examples").glob("plot_*.py")}},
}
html_static_path = ["_static"]
html_css_files = ["xrayest.css"]
templates_path = ["_templates"]

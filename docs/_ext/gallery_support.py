"""Gallery support: the command line each example runs with, and a scraper for xrayest's figures.

xrayest's plotting functions return pyplot-free ``matplotlib.figure.Figure`` objects (no global state,
no GUI backend), which sphinx-gallery's own matplotlib scraper does not see: ``figure_scraper`` saves
every such Figure an example's code block left in a variable, once.
"""

import os
import weakref
from pathlib import Path

_SAVED = weakref.WeakSet()


# the BU CS542 images the examples run on: ../shared beside the repository
BU = Path(__file__).resolve().parents[3] / "shared" / "data" / "bu_cs542"


def reset_argv(gallery_conf, script_vars):
    """``--data`` (the BU images) and ``--quick`` unless ``XRAYEST_DOCS_FULL=1``."""
    return ["--data", str(BU), *([] if os.environ.get("XRAYEST_DOCS_FULL") == "1" else ["--quick"])]


def figure_scraper(block, block_vars, gallery_conf):
    """Save the pyplot-free Figures bound to the example's variables; runs before the matplotlib scraper."""
    from matplotlib.figure import Figure
    from sphinx_gallery.scrapers import figure_rst

    paths = []
    for value in list(block_vars["example_globals"].values()):
        if not isinstance(value, Figure) or value in _SAVED:
            continue
        _SAVED.add(value)  # once, whoever saves it
        if value.canvas.manager is not None:  # a pyplot figure: its scraper (next in line) saves it
            continue
        path = next(block_vars["image_path_iterator"])
        value.savefig(path, dpi=100)
        paths.append(path)
    return figure_rst(paths, gallery_conf["src_dir"])

"""Run one gallery example in full and keep its figures for its page.

    python docs/_ext/full_run.py examples/plot_6_pipelines.py [the example's arguments]

The example runs as a script would (its own command line, no ``--quick``); every matplotlib figure it
leaves (pyplot's, and the pyplot-free ones xrayest's plotting functions return) is written to
``docs/_static/full_runs/<example>_<k>.png``, and the wall time is printed. The example's text then
shows those files with the command and the time: the gallery itself is built in quick mode.
"""

import runpy
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "_static" / "full_runs"


def main():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    example = Path(sys.argv[1])
    sys.argv = [str(example), *sys.argv[2:]]
    start = time.perf_counter()
    names = runpy.run_path(str(example), run_name="__main__")
    seconds = time.perf_counter() - start
    figures = [plt.figure(n) for n in plt.get_fignums()]
    figures += [v for v in names.values() if isinstance(v, Figure) and v not in figures]
    OUT.mkdir(parents=True, exist_ok=True)
    for k, figure in enumerate(figures, 1):
        path = OUT / f"{example.stem}_{k}.png"
        figure.savefig(path, dpi=100)
        print(f"wrote {path.relative_to(OUT.parents[1])}")
    print(f"{example.name}: {seconds:.0f} s for the whole script")


if __name__ == "__main__":
    main()

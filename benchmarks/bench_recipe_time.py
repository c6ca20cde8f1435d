"""How long ``make_recipe("pediatric_pneumonia").fit`` takes on this host, from its parts' measured rates,
and the cascade epoch budget that fits a time limit.

The recipe's fit on the 4,947 pediatric films is two members: the pediatric cascade (two ``sutd_cnn``
stages trained from scratch on augmented 150 px films: the first on every film, the second on the
infected ones, ``epochs`` each) and ``xception_middle`` (every film once through Xception's blocks 1-12
at 299 px, cached, then a linear head on the cached features).  Both are timed here on --n films, in
the host's best precision (``precision="auto"``), each the way the recipe runs it:

- a cascade stage: ``XrayCNNClassifier(**RECIPES["sutd_cnn"])`` without validation split, as the
  pediatric cascade's stages, for --epochs epochs; its training rate is images/s over the epochs after
  the first (``EpochTimer``), its fixed cost (decoding, tracing, the first epoch's excess, BatchNorm
  recalibration) the fit's time less the epochs at that rate;
- ``xception_middle``: ``make_recipe("xception_middle")`` fitted on --xception-n films with the genuine
  ImageNet weights (../shared/tools), per film (featurization and its head's epochs, both linear in
  the films).

The projection for all 4,947 films is the cascade's 4,947 + 3,605 images per epoch (normal vs
infected, then bacterial vs viral) at the measured rate, twice the stage's fixed cost, and the
Xception member per film; then the most cascade epochs whose projected fit stays within --limit
minutes.  On an AVX512-BF16 host the projection can be checked against a measured whole fit
(``bench_pediatric_cv.py --recipe pediatric_pneumonia --fit-all``).  ``--isa avx2`` caps TensorFlow's
kernels at AVX2 (an AVX2-only host's kernels on a newer CPU; the host line says so).

    python benchmarks/bench_recipe_time.py [--n 512] [--epochs 3] [--xception-n 128] [--limit 30] [--isa native]
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import (ISA_SETTINGS, PEDIATRIC_DATA, append_results, cap_isa, host, machine_info, markdown_table,
                     pediatric_subsample, record_result, xception_weights)

DATA = PEDIATRIC_DATA
ALL_FILMS, INFECTED = 4947, 3605  # the pediatric set: every film, and its bacterial + viral ones


def recipe_members():
    """The recipe's two members as it builds them: a cascade stage's parameters, and the Xception member."""
    from xrayest import make_recipe

    cascade, xception = make_recipe("pediatric_pneumonia").estimator
    return cascade.stages[0][1].get_params(), xception


def time_stage(n, epochs):
    """A cascade stage's training rate (images/s, epochs after the first) and its fixed cost (s)."""
    from xrayest import XrayCNNClassifier
    from xrayest.callbacks import EpochTimer

    paths, y = pediatric_subsample(n)
    clf = XrayCNNClassifier(**{**recipe_members()[0], "epochs": epochs, "random_state": 0},
                            callbacks=[EpochTimer()])
    start = time.perf_counter()
    clf.fit(paths, y)
    fit_s = time.perf_counter() - start
    later = clf.history_["epoch_time"][1:]
    rate = n * len(later) / sum(later)
    return {"rate": rate, "fixed": fit_s - epochs * n / rate, "fit": fit_s, "precision": clf.precision_}


def time_xception(n):
    """Seconds per film of the Xception member's fit (featurization at its size, and its head)."""
    from sklearn.base import clone

    paths, y = pediatric_subsample(n, seed=1)
    clf = clone(recipe_members()[1]).set_params(weights=xception_weights(), random_state=0)
    start = time.perf_counter()
    clf.fit(paths, y)
    return {"per_film": (time.perf_counter() - start) / n, "precision": clf.precision_}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=512, help="films a cascade stage is timed on")
    parser.add_argument("--epochs", type=int, default=3, help="epochs the stage is timed over")
    parser.add_argument("--xception-n", type=int, default=128, help="films the xception_middle member is timed on")
    parser.add_argument("--limit", type=float, default=30.0, help="minutes the recipe's fit should take")
    parser.add_argument("--isa", default="native", choices=sorted(ISA_SETTINGS),
                        help="avx2: cap TensorFlow's kernels at AVX2 (ONEDNN_MAX_CPU_ISA)")
    parser.add_argument("--avx2-cpu-rate", type=float, default=0.0,
                        help="with --isa avx2: a real AVX2-only CPU's measured training rate of a stage (img/s); the "
                             "projection is then repeated with every measured time scaled by this host's rate over it")
    args = parser.parse_args()
    cap_isa(args.isa)  # before TensorFlow is imported
    if not DATA.is_dir():
        sys.exit(f"skipped: pediatric_cxr not found at {DATA} (it lives in ../shared beside the repo)")
    print(f"host: {machine_info()}", flush=True)
    stage = time_stage(args.n, args.epochs)
    print(f"cascade stage: {stage}", flush=True)
    member = time_xception(args.xception_n)
    print(f"xception_middle: {member}", flush=True)

    def projected(epochs, slower=1.0):  # seconds for the whole recipe on every film (every time x slower)
        return slower * (epochs * (ALL_FILMS + INFECTED) / stage["rate"] + 2 * stage["fixed"]
                         + ALL_FILMS * member["per_film"])

    stage_params, xception = recipe_members()
    recipe_epochs = stage_params["epochs"]
    budget = max((e for e in range(1, 36) if projected(e) <= 60 * args.limit), default=0)
    crop = f", crop={stage_params['crop']}" if stage_params["crop"] else ""
    rows = [[f"a cascade stage (sutd_cnn, augmented, batch 64{crop})", stage["precision"],
             f"{stage['rate']:.0f} img/s, {stage['fixed']:.0f} s fixed"],
            [f"the Xception member (blocks 1-12 at {xception.image_size} px, cached; linear head"
             f"{', crop=' + xception.crop if xception.crop else ''})", member["precision"],
             f"{1e3 * member['per_film']:.0f} ms per film"],
            [f"the recipe on {ALL_FILMS:,} films, the cascade's {recipe_epochs} epochs (projected)", "",
             f"{projected(recipe_epochs) / 60:.1f} min"],
            [f"cascade epochs within {args.limit:g} min", "",
             f"{budget} ({projected(budget) / 60:.1f} min)" if budget else "none"]]
    real = ""
    if args.avx2_cpu_rate and args.isa == "avx2":  # a capped host: the same fit on a real AVX2-only CPU
        slower = stage["rate"] / args.avx2_cpu_rate
        rows.append([f"the recipe on a real AVX2-only CPU training a stage at {args.avx2_cpu_rate:g} img/s (every "
                     f"time here x {slower:.2f}, projected)", "", f"{projected(recipe_epochs, slower) / 60:.1f} min"])
        real = (f"; on a real AVX2-only CPU at {args.avx2_cpu_rate:g} img/s a stage, "
                f"{projected(recipe_epochs, slower) / 60:.0f} min")
    table = markdown_table(["part of make_recipe(\"pediatric_pneumonia\").fit", "precision", "measured"], rows)
    print(table)
    append_results(f"bench_recipe_time: make_recipe(\"pediatric_pneumonia\").fit on {ALL_FILMS:,} films, projected "
                   f"from its parts' rates", table,
                   notes=f"A cascade stage timed on {args.n} films over {args.epochs} epochs (the rate over the "
                         f"epochs after the first), xception_middle fitted on {args.xception_n} films. Projection: "
                         f"{ALL_FILMS:,} + {INFECTED:,} cascade images per epoch, two stages' fixed cost, the "
                         f"Xception member per film. Host: {host()}.")
    record_result(f"recipe_time_{stage['precision']}",
                  f"`make_recipe(\"pediatric_pneumonia\").fit` on {ALL_FILMS:,} films, {stage['precision']}, "
                  "projected from its parts' measured rates",
                  f"{projected(recipe_epochs) / 60:.0f} min at the cascade's {recipe_epochs} epochs (a stage "
                  f"{stage['rate']:.0f} img/s; Xception {1e3 * member['per_film']:.0f} ms per film){real}")


if __name__ == "__main__":
    main()

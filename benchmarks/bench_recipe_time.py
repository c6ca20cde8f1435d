"""How long ``make_recipe("pediatric_pneumonia").fit`` (or --recipe's) takes on this host, from its parts'
measured rates, and the epoch budget of its trained member that fits a time limit.

The recipe's fit on the 4,947 pediatric films is two members: a network trained from scratch on augmented
films (``pediatric_pneumonia``: one ``sutd_cnn`` at 128 px on every film, ``epochs`` times;
``pediatric_pneumonia_full``: the pediatric cascade, two ``sutd_cnn`` stages at 150 px, the first on every
film, the second on the infected ones) and ``xception_middle`` (every film once through Xception's blocks
1-12, cached, then a linear head on the cached features).  Both are timed here on --n films, in the
host's best precision (``precision="auto"``), each the way the recipe runs it:

- the trained member (a cascade: one of its stages) with its own parameters, for --epochs epochs; its
  training rate is images/s over the epochs after the first (``EpochTimer``), its fixed cost
  (decoding, tracing, the first epoch's excess, BatchNorm recalibration) the fit's time less the
  epochs at that rate;
- ``xception_middle`` as the recipe sets it (size, crop) fitted on a quarter of --xception-n films and on
  all of them, with the genuine ImageNet weights (../shared/tools): its time per film is the slope
  (featurization and its head's epochs, both linear in the films), its fixed cost the intercept.

The projection for all 4,947 films is the trained member's images per epoch (every film; a cascade also
the 3,605 infected ones) at the measured rate, its fixed cost once per stage, and the Xception member
per film and its fixed cost; then the most epochs whose projected fit stays within --limit minutes.
``--isa avx2`` caps TensorFlow's kernels at AVX2 (an AVX2-only host's kernels on a newer CPU; the host
line says so); with ``--avx2-cpu-rate R`` (a real AVX2-only CPU's training rate of
``make_recipe("sutd_cnn")`` at 150 px, img/s) this host's rate of the same is measured too, and the
projection is repeated with every time scaled by their ratio.  On an AVX512-BF16 host the projection
can be checked against a measured whole fit (``bench_pediatric_cv.py --recipe pediatric_pneumonia
--fit-all``).

    python benchmarks/bench_recipe_time.py [--recipe pediatric_pneumonia] [--n 512] [--epochs 3]
        [--xception-n 512] [--limit 30] [--isa native] [--avx2-cpu-rate R]
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import (ISA_SETTINGS, PEDIATRIC_DATA, append_results, cap_isa, host, machine_info, markdown_table,
                     pediatric_subsample, record_result, xception_weights)

DATA = PEDIATRIC_DATA
ALL_FILMS, INFECTED = 4947, 3605  # the pediatric set: every film, and its bacterial + viral ones


def recipe_members(recipe="pediatric_pneumonia"):
    """The recipe's members as make_recipe builds them: the trained member's parameters (a cascade: its
    stages'), the images one of its epochs trains on, its number of stages, and the Xception member."""
    from xrayest import CascadeClassifier, make_recipe

    trained, xception = make_recipe(recipe).estimator
    if isinstance(trained, CascadeClassifier):
        return trained.stages[0][1].get_params(), ALL_FILMS + INFECTED, 2, xception
    return trained.get_params(), ALL_FILMS, 1, xception


def time_stage(params, n, epochs):
    """A network's training rate (images/s, epochs after the first) and its fixed cost (s), with ``params``."""
    from xrayest import XrayCNNClassifier
    from xrayest.callbacks import EpochTimer

    paths, y = pediatric_subsample(n)
    clf = XrayCNNClassifier(**{**params, "epochs": epochs, "random_state": 0, "callbacks": [EpochTimer()]})
    start = time.perf_counter()
    clf.fit(paths, y)
    fit_s = time.perf_counter() - start
    later = clf.history_["epoch_time"][1:]
    rate = n * len(later) / sum(later)
    return {"rate": rate, "fixed": fit_s - epochs * n / rate, "fit": fit_s, "precision": clf.precision_}


def time_xception(member, n):
    """Seconds per film of the Xception member's fit (featurization at its size and crop, and its head),
    and its fixed cost: fitted on ``n // 4`` and on ``n`` films, the slope and the intercept of the two
    (building the network and tracing cost the same for any number of films)."""
    from sklearn.base import clone

    times = {}
    for films in (n // 4, n):
        paths, y = pediatric_subsample(films, seed=1)
        clf = clone(member).set_params(weights=xception_weights(), random_state=0, cache_features=False)
        start = time.perf_counter()
        clf.fit(paths, y)
        times[films] = time.perf_counter() - start
    per_film = (times[n] - times[n // 4]) / (n - n // 4)
    return {"per_film": per_film, "fixed": max(times[n] - n * per_film, 0.0), "precision": clf.precision_}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="pediatric_pneumonia", choices=["pediatric_pneumonia",
                                                                             "pediatric_pneumonia_full"])
    parser.add_argument("--n", type=int, default=512, help="films the trained member is timed on")
    parser.add_argument("--epochs", type=int, default=3, help="epochs it is timed over")
    parser.add_argument("--xception-n", type=int, default=512,
                        help="films the xception_middle member is timed on (and a quarter of them)")
    parser.add_argument("--limit", type=float, default=30.0, help="minutes the recipe's fit should take")
    parser.add_argument("--isa", default="native", choices=sorted(ISA_SETTINGS),
                        help="avx2: cap TensorFlow's kernels at AVX2 (ONEDNN_MAX_CPU_ISA)")
    parser.add_argument("--avx2-cpu-rate", type=float, default=0.0,
                        help="a real AVX2-only CPU's training rate of make_recipe('sutd_cnn') at 150 px (img/s): "
                             "this host's is measured too, and the projection repeated with every time scaled by "
                             "their ratio")
    args = parser.parse_args()
    cap_isa(args.isa)  # before TensorFlow is imported
    if not DATA.is_dir():
        sys.exit(f"skipped: pediatric_cxr not found at {DATA} (it lives in ../shared beside the repo)")
    print(f"host: {machine_info()}", flush=True)
    params, per_epoch, stages, xception = recipe_members(args.recipe)
    stage = time_stage(params, args.n, args.epochs)
    print(f"trained member: {stage}", flush=True)
    member = time_xception(xception, args.xception_n)
    print(f"xception_middle: {member}", flush=True)

    def projected(epochs, slower=1.0):  # seconds for the whole recipe on every film (every time x slower)
        return slower * (epochs * per_epoch / stage["rate"] + stages * stage["fixed"] + ALL_FILMS * member["per_film"]
                         + member["fixed"])

    recipe_epochs = params["epochs"]
    budget = max((e for e in range(1, 61) if projected(e) <= 60 * args.limit), default=0)
    crop = f", crop={params['crop']}" if params["crop"] else ""
    what = "a cascade stage" if stages == 2 else "the trained member"
    rows = [[f"{what} (sutd_cnn at {params['image_size']} px, augmented, batch {params['batch_size']}{crop})",
             stage["precision"], f"{stage['rate']:.0f} img/s, {stage['fixed']:.0f} s fixed"],
            [f"the Xception member (blocks 1-12 at {xception.image_size} px, cached; linear head"
             f"{', crop=' + xception.crop if xception.crop else ''})", member["precision"],
             f"{1e3 * member['per_film']:.0f} ms per film, {member['fixed']:.0f} s fixed"],
            [f"the recipe on {ALL_FILMS:,} films, {recipe_epochs} epochs (projected)", "",
             f"{projected(recipe_epochs) / 60:.1f} min"],
            [f"epochs within {args.limit:g} min", "",
             f"{budget} ({projected(budget) / 60:.1f} min)" if budget else "none"]]
    real = ""
    if args.avx2_cpu_rate:  # the same fit on a real AVX2-only CPU, scaled by a reference both measured
        from xrayest.recipes import RECIPES

        reference = time_stage({**RECIPES["sutd_cnn"], "validation_split": 0.0}, args.n, args.epochs)
        slower = reference["rate"] / args.avx2_cpu_rate
        rows.append([f"make_recipe(\"sutd_cnn\") at 150 px here, against a real AVX2-only CPU's "
                     f"{args.avx2_cpu_rate:g} img/s", reference["precision"],
                     f"{reference['rate']:.0f} img/s: every time x {slower:.2f}"])
        rows.append(["the recipe on that CPU (projected)", "", f"{projected(recipe_epochs, slower) / 60:.1f} min"])
        fits = max((e for e in range(1, 61) if projected(e, slower) <= 60 * args.limit), default=0)
        rows.append([f"epochs within {args.limit:g} min on that CPU", "",
                     f"{fits} ({projected(fits, slower) / 60:.1f} min)" if fits else "none"])
        real = (f"; on a real AVX2-only CPU training sutd_cnn at {args.avx2_cpu_rate:g} img/s, "
                f"{projected(recipe_epochs, slower) / 60:.0f} min")
    table = markdown_table([f"part of make_recipe(\"{args.recipe}\").fit", "precision", "measured"], rows)
    print(table)
    append_results(f"bench_recipe_time: make_recipe(\"{args.recipe}\").fit on {ALL_FILMS:,} films, projected "
                   f"from its parts' rates", table,
                   notes=f"The trained member timed on {args.n} films over {args.epochs} epochs (the rate over the "
                         f"epochs after the first), xception_middle fitted on {args.xception_n // 4} and "
                         f"{args.xception_n} films (its time per film the slope). Projection: "
                         f"{per_epoch:,} images per epoch, {stages} stage(s)' fixed cost, the Xception member per "
                         f"film. Host: {host()}.")
    name = "" if args.recipe == "pediatric_pneumonia" else "full_"
    record_result(f"recipe_time_{name}{stage['precision']}",
                  f"`make_recipe(\"{args.recipe}\").fit` on {ALL_FILMS:,} films, {stage['precision']}, "
                  "projected from its parts' measured rates",
                  f"{projected(recipe_epochs) / 60:.0f} min at its {recipe_epochs} epochs (the trained network "
                  f"{stage['rate']:.0f} img/s; Xception {1e3 * member['per_film']:.0f} ms per film){real}")


if __name__ == "__main__":
    main()

"""bench_peers' reader of oneDNN's own log (``ONEDNN_VERBOSE=1``) of sutd_cnn's train step: each primitive's
implementation and time, the convolutions' rate by direction (see bench_peers.py)."""

from __future__ import annotations

import sys
import time

from _common import pediatric_subsample
from peers_profile import fixed_batch, warm_train_step
from peers_stacks import BATCH, XRAYEST


def run_primitives(n, precision="float32", steps=5):
    """oneDNN's own account of sutd_cnn's train step: run in a child with ``ONEDNN_VERBOSE=1`` (oneDNN
    logs each primitive it executes: its kind, the implementation it chose, its shapes and its time)
    and one op at a time (``TF_NUM_INTEROP_THREADS=1``, so no two primitives share the cores).  The
    log of ``steps`` steps on one fixed batch, after three warm ones, is summed per primitive."""
    import os
    import tempfile

    log = tempfile.NamedTemporaryFile("w+", suffix=".log")
    stdout = os.dup(1)
    os.dup2(log.fileno(), 1)  # oneDNN writes its log to the process's standard output
    try:
        from xrayest import XrayCNNClassifier

        paths, y = pediatric_subsample(n)
        clf = XrayCNNClassifier("sutd_cnn", precision=precision, epochs=1, **XRAYEST).fit(paths[:BATCH], y[:BATCH])
        x, t = fixed_batch(paths, y, clf.classes_)
        model = clf.model_
        warm_train_step(model, x, t)
        sys.stdout.flush()
        print("TIMED STEPS", flush=True)
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, t)
        step = (time.perf_counter() - start) / steps
        sys.stdout.flush()
    finally:
        os.dup2(stdout, 1)
    log.seek(0)
    text = log.read().partition("TIMED STEPS")[2]
    sums = {}
    for line in text.splitlines():
        fields = line.split(",")
        if not line.startswith("onednn_verbose") or "exec" not in fields:
            continue
        at = fields.index("exec")
        key = f"{fields[at + 2]}|{fields[at + 4]}|{fields[-2]}|{fields[at + 3]}"  # kind|direction|shape|implementation
        sums[key] = sums.get(key, 0.0) + float(fields[-1]) / 1e3 / steps
    return {"step": step, "primitives": sums}


def _conv_problem(shape: str) -> dict:
    """The sizes in oneDNN's problem string of a convolution ("mb64_ic32oc64_ih75oh75kh3...": mb, ic, oc, ...)."""
    import re

    return {name: int(value) for name, value in re.findall(r"([a-z]{2})(\d+)", shape)}


def conv_problem_flops(shape: str) -> float:
    """Multiply-adds x 2 of a convolution from oneDNN's problem string."""
    p = _conv_problem(shape)
    return 2.0 * p["mb"] * p["ic"] * p["oc"] * p["oh"] * p["ow"] * p["kh"] * p["kw"]


def conv_directions(primitives) -> dict:
    """Per direction of the convolutions in oneDNN's log (:func:`run_primitives`): (FLOPs, seconds) per step."""
    out = {}
    for direction in ("forward_training", "backward_data", "backward_weights"):
        parts = [(key.split("|")[2], seconds) for key, seconds in primitives["primitives"].items()
                 if key.startswith(f"convolution|{direction}|")]
        out[direction] = (sum(conv_problem_flops(shape) for shape, _ in parts), sum(t for _, t in parts))
    return out


def primitive_rows(primitives, top=12):
    """The ``top`` primitives by time, each direction of the convolutions summed, then the rest and the
    total, for :func:`run_primitives`' result."""
    sums = primitives["primitives"]
    ranked = sorted(sums.items(), key=lambda item: -item[1])
    rows = []
    for key, seconds in ranked[:top]:
        kind, direction, shape, implementation = key.split("|")
        if kind == "convolution":
            p = _conv_problem(shape)
            shown, rate = (f"{p['ih']}x{p['iw']}x{p['ic']} -> {p['oc']}, {p['kh']}x{p['kw']}",
                           f"{conv_problem_flops(shape) / seconds / 1e9:.0f}")
        else:
            shown, rate = f"`{shape}`", ""
        rows.append([f"{kind}, {direction}", shown, f"`{implementation}`", f"{1e3 * seconds:.1f}", rate])
    rest = sum(seconds for _, seconds in ranked[top:])
    rows.append([f"the other {len(ranked[top:])} primitives", "", "", f"{1e3 * rest:.1f}", ""])
    for direction, (flops, seconds) in conv_directions(primitives).items():
        rows.append([f"all convolutions, {direction}", "", "", f"{1e3 * seconds:.1f}", f"{flops / seconds / 1e9:.0f}"])
    rows.append(["**all oneDNN primitives** / the step's wall time", "", "",
                 f"**{1e3 * sum(sums.values()):.1f}** / {1e3 * primitives['step']:.1f}", ""])
    return rows


def weight_gradient_note(primitives, flops, peak, rate) -> str:
    """What xrayest's fit (``rate`` img/s) would reach if its convolutions' weight gradients ran at their
    forward passes' rate: the step's time shrunk by the share oneDNN's log (:func:`run_primitives`) says."""
    directions = conv_directions(primitives)
    forward_flops_, forward_s = directions["forward_training"]
    weight_flops, weight_s = directions["backward_weights"]
    saved = (weight_s - weight_flops * forward_s / forward_flops_) / primitives["step"]
    faster = rate / (1 - saved)
    return (f"In oneDNN's log (one op at a time) the weight gradients take {1e3 * weight_s:.0f} of the step's "
            f"{1e3 * primitives['step']:.0f} ms at {weight_flops / weight_s / 1e9:.0f} GFLOP/s, the forward passes "
            f"run at {forward_flops_ / forward_s / 1e9:.0f}: at that rate the step would take {100 * saved:.0f}% "
            f"less time, xrayest's fit {faster:.0f} img/s, {100 * faster * flops / 1e9 / peak:.0f}% of the peak.")

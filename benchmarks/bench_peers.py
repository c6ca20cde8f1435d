"""Training speed against the peers a user would pick instead, on the same network and data, with the
machine's matmul peak in that precision measured in the same run.

The network is the sutd_cnn shape (five conv3x3-BN-ReLU-maxpool blocks 32-64-64-128-128, Flatten,
Dense 256, Dense 128, 3 classes), 150 px grayscale pediatric X-rays (--n of them, stratified), batch 64,
Adam 1e-3, random crop / rotation / shift augmentation, every stack in the host's best precision
(--precision auto, what xrayest's ``precision="auto"`` picks: bfloat16 where the CPU has AMX-BF16 or
AVX512-BF16, float32 on AVX2-only CPUs, where bfloat16 is emulated):

- ``xrayest``: ``XrayCNNClassifier("sutd_cnn", precision=P, augment="xray", pooling="flatten",
  hidden_units=(256, 128))`` on the file paths (its blocks pool before their ReLU: the same function);
- ``keras``: plain Keras 3 on the same layers (the ``mixed_bfloat16`` policy in bfloat16), ``tf.data`` from a
  uint8 array (shuffle, batch, prefetch), Keras' Random* layers in the model, twice: with TensorFlow's
  default kernels and with ``TF_ENABLE_ONEDNN_OPTS=1`` (oneDNN forced on, what a Keras user who knows the
  variable runs); the faster is the Keras peer.  On an AVX2-only CPU TensorFlow's default leaves its oneDNN
  kernels off (xrayest turns them on): there xrayest also runs with TensorFlow's default (oneDNN off);
- ``torch:N:LAYOUT``: PyTorch (``torch.autocast("cpu", torch.bfloat16)`` in bfloat16), torchvision's
  RandomResizedCrop + RandomAffine on uint8 tensors in a ``DataLoader`` with N workers, the model and its
  batches ``channels_last`` or ``contiguous`` (PyTorch's default NCHW): each N of --torch-workers with each
  layout of --torch-layouts; the fastest is the PyTorch peer.  PyTorch is not a dependency of xrayest (``pip install
  ".[peers]"``; from PyPI torch brings about 3 GB of CUDA libraries, CI does not install it): give
  --torch-python for an interpreter that has it; without torch the rows are skipped with the reason.

Each variant runs in its own process, in turn, --rounds times.  Images/s counts the epochs after the
first.  GFLOP/s = images/s x the network's training FLOPs per image (3x the forward FLOPs of its
convolution and dense layers, counted from the model); the peak is a 2048^3 matmul in TensorFlow in
that precision, timed before each round of the variants and after them; beside each row the peak of the
round that gave its best rate, and the row's share of it.  The table's host line names the CPU model and
its bfloat16 kind (from its flags).  ``--isa avx2`` caps every stack's kernels at AVX2 (oneDNN's
``ONEDNN_MAX_CPU_ISA``, PyTorch's ``ATEN_CPU_CAPABILITY``): an AVX2-only host's kernels on a newer
CPU (its cores, caches and memory stay this host's), and the host line names the cap.

Then xrayest's from-scratch backbones (--backbones) are timed the same way, and each one's train step is
profiled: a ``tf.profiler`` trace of ``train_on_batch`` on one batch, its ops summed by part of the step,
and each convolution timed alone at its shapes (their sum is the floor of the step).  sutd_cnn's step is
also read from oneDNN's own log (``ONEDNN_VERBOSE=1``, one op at a time): each primitive's implementation
and time, the convolutions' rate by direction, and what the fit would reach if the weight gradients ran at
the forward passes' rate.  With --levers, sutd_cnn's train step is also timed with one thing changed at
a time (:data:`LEVERS`).

    python benchmarks/bench_peers.py [--n 1024] [--epochs 3] [--rounds 2] [--precision auto] [--isa native]
                                     [--torch-python PATH]
                                     [--backbones sutd_cnn,residual_cnn,sutd_residual] [--levers]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from _common import (ISA_SETTINGS, append_results, cap_isa, machine_info, markdown_table, record_result, report_result,
                     run_child)
from peers_levers import LEVERS, run_lever
from peers_onednn import primitive_rows, run_primitives, weight_gradient_note
from peers_profile import kernel_rows, profile_rows, run_profile
from peers_stacks import (BATCH, DATA, TORCH_LAYOUTS, backbone_rows, best_of, best_round, rate_rows, run_keras,
                          run_peak, run_torch, run_xrayest)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--torch-python", default=sys.executable,
                        help="a Python with torch and torchvision (default: this one)")
    parser.add_argument("--torch-workers", default="0,1,2", help="DataLoader worker counts to try")
    parser.add_argument("--torch-layouts", default=",".join(TORCH_LAYOUTS),
                        help="PyTorch memory formats to try, each with each worker count")
    parser.add_argument("--backbones", default="sutd_cnn,residual_cnn,sutd_residual",
                        help="xrayest's from-scratch backbones to time and profile (sutd_cnn always)")
    parser.add_argument("--levers", action="store_true",
                        help="also time sutd_cnn's train step with each lever of LEVERS changed, in turn")
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="every stack's precision; auto: the host's best (what xrayest's precision='auto' picks)")
    parser.add_argument("--isa", default="native", choices=sorted(ISA_SETTINGS),
                        help="avx2: cap TensorFlow's and PyTorch's kernels at AVX2 (ONEDNN_MAX_CPU_ISA, "
                             "ATEN_CPU_CAPABILITY), an AVX2-only host's kernels on this CPU; the host line says so")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cap_isa(args.isa)  # before TensorFlow is imported; the children inherit it
    from xrayest.device import resolve_precision

    precision = resolve_precision(args.precision, "cpu")
    if args.variant:
        kind, _, arg = args.variant.partition(":")
        workers, _, layout = arg.partition(":")  # torch:N:LAYOUT
        result = {"xrayest": lambda: run_xrayest(args.n, args.epochs, arg, precision),
                  "xrayest-tf-default": lambda: run_xrayest(args.n, args.epochs, arg, precision),
                  "keras": lambda: run_keras(args.n, args.epochs, precision),
                  "torch": lambda: run_torch(args.n, args.epochs, int(workers or 0), precision,
                                             layout or "channels_last"), "peak": run_peak,
                  "profile": lambda: run_profile(args.n, arg, precision),
                  "lever": lambda: run_lever(args.n, arg, precision),
                  "primitives": lambda: run_primitives(args.n, precision)}[kind]()
        report_result(result)
        return
    if not DATA.is_dir():
        sys.exit(f"skipped: pediatric_cxr not found at {DATA} (it lives in ../shared beside the repo)")
    probe = subprocess.run([args.torch_python, "-c", "import torch, torchvision"], capture_output=True)
    has_torch = probe.returncode == 0
    backbones = ["sutd_cnn", *(b for b in args.backbones.split(",") if b and b != "sutd_cnn")]
    from xrayest.device import cpu_flags, onednn_off_by_default

    # plain Keras as TensorFlow's default has it and with TF_ENABLE_ONEDNN_OPTS=1 (a Keras user who knows the
    # variable); TensorFlow's default leaves its oneDNN kernels off on AVX2-only CPUs (xrayest turns them
    # on), and there xrayest runs once more with TensorFlow's default
    tf_default_off = onednn_off_by_default(cpu_flags())
    envs = {"keras": {"TF_ENABLE_ONEDNN_OPTS": "0" if tf_default_off else None},
            "keras:onednn": {"TF_ENABLE_ONEDNN_OPTS": "1"}}
    variants = ["xrayest:sutd_cnn", "keras", "keras:onednn"]
    if tf_default_off:
        envs["xrayest-tf-default:sutd_cnn"] = {"TF_ENABLE_ONEDNN_OPTS": "0"}
        variants.append("xrayest-tf-default:sutd_cnn")
    if has_torch:
        variants += [f"torch:{w}:{layout}" for layout in args.torch_layouts.split(",")
                     for w in args.torch_workers.split(",")]
    else:
        print(f"skipped the PyTorch rows: {args.torch_python} cannot import torch and torchvision "
              '(pip install ".[peers]", or give --torch-python)', file=sys.stderr)
    variants += [f"xrayest:{b}" for b in backbones[1:]]
    print(f"host: {machine_info()}; every stack in {precision}", flush=True)
    common = ["--n", args.n, "--epochs", args.epochs, "--precision", precision]
    peaks = []  # one before each round, one after the last
    results = {v: [] for v in variants}
    for _ in range(args.rounds):
        peaks.append(run_child(__file__, ["--variant", "peak"], "peak"))
        for variant in variants:
            python = args.torch_python if variant.startswith("torch") else sys.executable
            results[variant].append(run_child(__file__, ["--variant", variant, *common], variant, python=python,
                                              env=envs.get(variant)))
            print(variant, results[variant][-1], flush=True)
    levers = {lever: [] for lever in (LEVERS if args.levers else [])}
    for _ in range(args.rounds):
        for lever in levers:
            levers[lever].append(run_child(__file__, ["--variant", f"lever:{lever}", *common], lever)["img_per_s"])
            print(lever, levers[lever][-1], flush=True)
    profiles = [run_child(__file__, ["--variant", f"profile:{b}", *common], f"profile {b}") for b in backbones]
    primitives = run_child(__file__, ["--variant", "primitives", *common], "oneDNN's log of the step",
                           env={"ONEDNN_VERBOSE": "1", "TF_NUM_INTEROP_THREADS": "1"})
    peaks.append(run_child(__file__, ["--variant", "peak"], "peak"))
    peak = max(p[precision] for p in peaks)
    short = {"bfloat16": "bf16", "float32": "float32"}[precision]
    flops = results["xrayest:sutd_cnn"][0]["flops"]
    rates = {v: max(r["img_per_s"] for r in runs) for v, runs in results.items()}
    peer = max((v for v in rates if not v.startswith("xrayest")), key=rates.get)
    keras_name = f"plain Keras, {'mixed_bfloat16' if precision == 'bfloat16' else 'float32'}, tf.data"
    names = {"xrayest:sutd_cnn": f"xrayest XrayCNNClassifier, {precision}, file paths",
             "keras": keras_name + f", TensorFlow's default (oneDNN {'off' if tf_default_off else 'on'})",
             "keras:onednn": keras_name + ", TF_ENABLE_ONEDNN_OPTS=1",
             "xrayest-tf-default:sutd_cnn": f"xrayest with TensorFlow's default kernels (oneDNN off), {precision}",
             **{v: f"PyTorch, {'bf16 autocast' if precision == 'bfloat16' else 'float32'}, {v.split(':')[2]}, "
                   f"{v.split(':')[1]} DataLoader workers"
                for v in results if v.startswith("torch")}}
    table = markdown_table(["stack (the sutd_cnn network)", "img/s (epochs 2+), per round", "GFLOP/s (best round)",
                            f"{short} matmul peak, GFLOP/s (that round)", f"of that {short} peak", "xrayest / this"],
                           rate_rows(results, rates, names, flops, [p[precision] for p in peaks]))
    table += "\n\n" + markdown_table(
        ["xrayest backbone", "training GFLOP per image", "img/s, per round", "GFLOP/s", f"of {short} peak",
         "per FLOP vs sutd_cnn", "img/s at 100% of the peak"], backbone_rows(results, rates, peak))
    table += "\n\n" + markdown_table(["part of the train step (batch 64, traced), ms per image",
                                        *(f"`{p['backbone']}`" for p in profiles)], profile_rows(profiles))
    if levers:
        base = max(next(iter(levers.values())))
        table += "\n\n" + markdown_table(
            ["lever on sutd_cnn's train step (one fixed batch, train_on_batch)", "img/s per model, per round",
             "vs as fitted"], [[lever, " / ".join(f"{r:.0f}" for r in runs), f"{max(runs) / base:.2f}"]
                               for lever, runs in levers.items()])
    rows, floor, conv_flops = kernel_rows(profiles[0], peak)
    table += "\n\n" + markdown_table(["`sutd_cnn` convolution, timed alone (batch 64)", "shape", "forward GFLOP/s",
                                        "input gradient GFLOP/s", "weight gradient GFLOP/s"], rows)
    table += "\n\n" + markdown_table(
        ["oneDNN primitive in `sutd_cnn`'s train step (ONEDNN_VERBOSE=1, one op at a time, batch 64)", "shape",
         "implementation", "ms per step", "GFLOP/s"], primitive_rows(primitives))
    print(table)
    step = profiles[0]["step"]
    bf16 = " / ".join(f"{p['bfloat16']:.0f}" for p in peaks) if "bfloat16" in peaks[0] else "not native here"
    fp32 = " / ".join(f"{p['float32']:.0f}" for p in peaks)
    append_results(
        f"bench_peers: the sutd_cnn network against its peers; xrayest's from-scratch backbones profiled, 150 px, "
        f"batch 64, augmentation, {precision}, {args.n} pediatric_cxr images, {args.epochs} epochs",
        table, notes=f"Training FLOPs per image of sutd_cnn {flops / 1e9:.2f} GFLOP (3x forward, conv + dense). "
                     f"bf16 matmul peak (2048^3, TensorFlow) {bf16} GFLOP/s before each round / after, float32 {fp32}. "
                     f"Each variant in its own process, in turn, per round; the fastest peer here: "
                     f"{names.get(peer, peer)} (xrayest {rates['xrayest:sutd_cnn'] / rates[peer]:.2f}x it). "
                     f"The sutd_cnn convolutions alone take {1e3 * floor / BATCH:.2f} ms per image "
                     f"({conv_flops / floor / 1e9:.0f} GFLOP/s, {100 * conv_flops / floor / 1e9 / peak:.0f}% of the "
                     f"peak) of its {1e3 * step / BATCH:.2f} ms train step: a step of convolutions only would "
                     f"train at {BATCH / floor:.0f} img/s. "
                     + weight_gradient_note(primitives, flops, peak, rates["xrayest:sutd_cnn"]))
    ours = rates["xrayest:sutd_cnn"]
    own_peak = peaks[best_round(results["xrayest:sutd_cnn"])][precision]
    others = [v for v in (best_of(rates, "keras"), best_of(rates, "torch")) if v and v != peer]
    record_result(f"peers_{precision}", f"training the sutd_cnn network against the peers, 150 px, augmented, "
                                       f"batch 64, {precision}",
                  f"xrayest {span(results['xrayest:sutd_cnn'])} img/s, the fastest peer ({names.get(peer, peer)}) "
                  f"{span(results[peer])}: {ours / rates[peer]:.2f}x"
                  + "".join(f", {names[v]} {span(results[v])}: {ours / rates[v]:.2f}x" for v in others)
                  + f"; {100 * ours * flops / 1e9 / own_peak:.0f}% of the {short} matmul peak measured in the same "
                    f"round ({own_peak:.0f} GFLOP/s)"
                  + (f"; with TensorFlow's default kernels (oneDNN off) xrayest "
                     f"{span(results['xrayest-tf-default:sutd_cnn'])}, plain Keras {span(results['keras'])}"
                     if tf_default_off else ""))


def span(runs) -> str:
    """Images/s of the rounds of one variant, as "low-high" (or one number)."""
    low, high = (round(f(r["img_per_s"] for r in runs)) for f in (min, max))
    return f"{low}" if low == high else f"{low}-{high}"


if __name__ == "__main__":
    main()

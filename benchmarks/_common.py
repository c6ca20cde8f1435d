"""Shared by the benchmark scripts: machine info, the real BU data, appending to RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BU_DATA = SHARED / "data" / "bu_cs542"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def report_result(result: dict):
    """In a child process of :func:`run_child`: hand ``result`` back to the parent."""
    import json

    print("RESULT " + json.dumps(result), flush=True)


def run_child(script, args, what, python=None, env=None) -> dict:
    """Run ``script`` with ``args`` in a fresh Python process (its own peak memory; ``python``, default this
    interpreter; ``env``, variables to set, None to unset) and return the dict it printed with
    :func:`report_result`; exit naming ``what`` with the child's stderr when it failed."""
    import json

    environ = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    out = subprocess.run([python or sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                         env={k: v for k, v in environ.items() if v is not None})
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if not line:
        sys.exit(f"{what} failed:\n{out.stderr[-3000:]}")
    return json.loads(line[0][len("RESULT "):])


PEDIATRIC_DATA = SHARED / "data" / "pediatric_cxr" / "train"


def pediatric_subsample(n, seed=0):
    """A stratified subsample of ``n`` pediatric_cxr films (all of them when ``n`` is at least their number):
    a list of file paths and an array of their labels."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    from xrayest import load_image_folder

    paths, y = load_image_folder(PEDIATRIC_DATA, return_paths=True)
    if n < len(paths):
        paths, _, y, _ = train_test_split(paths, y, train_size=n, stratify=y, random_state=seed)
    return list(paths), np.asarray(y)


def require_bu_data():
    if not BU_DATA.is_dir():
        sys.exit(f"skipped: the real BU CS542 X-rays are not at {BU_DATA} (they live in ../shared beside the repo)")
    return BU_DATA


def xception_weights():
    """Path of genuine ImageNet Xception (no top) weights from ../shared/tools, or exit with a reason."""
    env = os.environ.get("XRAYEST_XCEPTION_WEIGHTS")
    if env:
        return env
    tool = SHARED / "tools" / "xception-imagenet-weights"
    if not tool.exists():
        sys.exit(f"skipped: {tool} not found; set XRAYEST_XCEPTION_WEIGHTS=/path/to/xception_notop.weights.h5")
    out = subprocess.run([str(tool), sys.executable], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"skipped: {tool} failed: {out.stderr.strip().splitlines()[-1:]}")
    return out.stdout.strip().splitlines()[-1]


def load_split(split, classes=None, size=299):
    """BU images of one split as uint8 RGB arrays at size x size, and their labels."""
    from xrayest import load_image_folder

    return load_image_folder(require_bu_data() / split, classes=classes, image_size=size)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _bfloat16_kind(flags) -> str:
    if flags is None:
        return "flags unknown"
    return next((name for flag, name in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16")) if flag in flags),
                "AVX2 only" if "avx2" in flags else "no AVX2")


def cpu_kind() -> str:
    """What the CPU computes bfloat16 with: "AMX-BF16", "AVX512-BF16", or "AVX2 only" (bfloat16 emulated);
    under an instruction-set cap (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY) what the CPU has, and the cap."""
    from xrayest.device import cpu_flags

    kind = _bfloat16_kind(cpu_flags(capped=False))
    caps = [f"{var}={os.environ[var]}" for var in ISA_CAPS if os.environ.get(var)]
    return f"{kind} CPU, kernels capped: {', '.join(caps)}" if caps else kind


# The CPU flags that decide which kernels run: vector width, FMA, the int8 and bfloat16 dot products, AMX
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def isa_flags() -> str:
    """The CPU's flags of :data:`ISA_FLAGS`, as /proc/cpuinfo lists them (before any instruction-set cap)."""
    from xrayest.device import cpu_flags

    flags = cpu_flags(capped=False)
    return " ".join(f for f in ISA_FLAGS if f in flags) if flags is not None else "unknown"


# The environment variables that cap the instruction sets of TensorFlow's (oneDNN) and PyTorch's (ATen) kernels,
# and their values for each --isa a benchmark offers: an AVX2-only host's kernels on a newer CPU.
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
ISA_SETTINGS = {"native": {}, "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}


def cap_isa(isa: str) -> None:
    """Limit this process's kernels, and its children's, to ``isa`` (a key of :data:`ISA_SETTINGS`); call it
    before TensorFlow or PyTorch is imported."""
    os.environ.update(ISA_SETTINGS[isa])


def host() -> str:
    """The host in a few words, for a results row: CPU model, its bfloat16 kind (and an instruction-set cap), cores."""
    from xrayest.device import cpu_flags

    model = cpu_model().replace("(R)", "").replace(" Processor", "").split(" @")[0]
    kind = _bfloat16_kind(cpu_flags(capped=False))
    if any(os.environ.get(var) for var in ISA_CAPS):  # capped: the CPU's kind, and the kernels' cap in short
        kind += f" CPU, kernels capped at {os.environ.get('ONEDNN_MAX_CPU_ISA', '?')}"
    return f"{model} ({kind}), {os.cpu_count()} cores"


def machine_info() -> str:
    import keras
    import tensorflow as tf

    gpus = len(tf.config.list_physical_devices("GPU"))
    return (f"{platform.node()} | {cpu_model()} | {cpu_kind()} | flags: {isa_flags()} | {os.cpu_count()} cores | "
            f"{gpus} GPU | "
            f"Python {platform.python_version()} | TF {tf.__version__} | Keras {keras.__version__}")


def _command() -> str:
    # absolute paths (another interpreter, an output file) are this machine's: only their last part is shown
    return " ".join(f"PATH/{Path(a).name}" if os.path.isabs(a) else a for a in [Path(sys.argv[0]).name,
                                                                                   *sys.argv[1:]])


def record_result(key: str, what: str, result: str) -> None:
    """Make ``result`` the latest headline of benchmark ``key`` in results.json (with this host, today and the
    command), and render the README's and RESULTS.md's tables from it again."""
    import render_results

    rows = render_results.load_rows()
    row = {"key": key, "what": what, "result": result, "host": host(),
           "date": datetime.date.today().isoformat(), "command": _command()}
    keys = [r["key"] for r in rows]
    if key in keys:
        rows[keys.index(key)] = row
    else:
        rows.append(row)
    render_results.save_rows(rows)
    render_results.main([])


def append_results(title: str, table: str, notes: str = ""):
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    command = _command()
    text = f"\n## {title} — {stamp}\n\nMachine: {machine_info()}\n\nCommand: `python {command}`\n\n{table}\n"
    if notes:
        text += f"\n{notes}\n"
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nAppended by the scripts in benchmarks/; newest last.\n")
    with RESULTS.open("a") as fh:
        fh.write(text)
    print(text)


def parse_overrides(items) -> dict:
    """``--set KEY=VALUE`` options as estimator parameters: each value a Python literal, else a string."""
    import ast

    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return overrides


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)

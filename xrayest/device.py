"""Where xrayest runs: resolve ``device="auto" | "cpu" | "gpu" | "gpu:N"``.

Asking for a GPU that is not there is an error that lists what was found; there is
never a silent fallback to the CPU.
"""

from __future__ import annotations

import contextlib
import os
import re

from _xrayest_startup import cpu_flags as _cpu_flags
from _xrayest_startup import onednn_off_by_default, onednn_opts_wanted

__all__ = ["DeviceUnavailableError", "available_devices", "resolve_device", "device_scope", "cpu_supports_bfloat16",
           "check_cpu_precision", "choose_precision", "resolve_precision", "onednn_off_by_default",
           "use_onednn_kernels"]

class DeviceUnavailableError(RuntimeError):
    """The ``device`` asked for (a GPU) is not on this machine."""


_DEVICE_PATTERN = re.compile(r"^(auto|cpu|gpu)(?::(\d+))?$")


def available_devices() -> dict[str, int]:
    """Number of CPU and GPU devices TensorFlow sees, e.g. ``{"cpu": 1, "gpu": 0}``."""
    import tensorflow as tf

    return {
        "cpu": len(tf.config.list_physical_devices("CPU")),
        "gpu": len(tf.config.list_physical_devices("GPU")),
    }


def resolve_device(device: str = "auto") -> str:
    """Turn a user's ``device`` string into a concrete Keras device name.

    Parameters
    ----------
    device : {"auto", "cpu", "gpu", "gpu:N"}
        ``"auto"`` picks the first GPU when there is one, else the CPU.

    Returns
    -------
    str
        ``"cpu:0"`` or ``"gpu:N"``.

    Raises
    ------
    ValueError
        For a malformed string, or a GPU that this machine does not have.
    """
    if not isinstance(device, str):
        raise ValueError(f"device must be a string such as 'auto', 'cpu', 'gpu' or 'gpu:0'; got {device!r}")
    match = _DEVICE_PATTERN.match(device.strip().lower())
    if match is None or (match.group(1) == "auto" and match.group(2) is not None):
        raise ValueError(f"device must be 'auto', 'cpu', 'gpu' or 'gpu:N'; got {device!r}")
    kind, index = match.group(1), int(match.group(2) or 0)
    found = available_devices()
    if kind == "auto":
        return "gpu:0" if found["gpu"] else "cpu:0"
    if kind == "cpu":
        return f"cpu:{index}"
    if index >= found["gpu"]:
        seen = ", ".join(f"{n} {k.upper()}" for k, n in found.items())
        raise DeviceUnavailableError(
            f"device={device!r} asks for GPU {index}, but TensorFlow found {seen} on this machine. "
            "Use device='cpu' (or 'auto'), or install a GPU build of TensorFlow with its CUDA libraries "
            "(pip install 'tensorflow[and-cuda]')."
        )
    return f"gpu:{index}"


@contextlib.contextmanager
def device_scope(device: str = "auto"):
    """Context manager placing every Keras op inside it on ``device``."""
    import keras

    name = resolve_device(device)
    if name.startswith("cpu"):
        _warn_slow_kernels_once()
    if name == "cpu:0" and available_devices()["gpu"] == 0:
        # Nothing else to run on: skip the device scope, which costs ~10% on small-op models.
        yield
        return
    with keras.device(name):
        yield


_BF16_CPU_FLAGS = {"amx_bf16", "avx512_bf16"}


# oneDNN's instruction-set caps (ONEDNN_MAX_CPU_ISA), each with the CPU flags it puts out of the kernels'
# reach: under a cap below AVX512_CORE_BF16 TensorFlow has no bfloat16 arithmetic (oneDNN refuses a
# bfloat16 matmul), and under AVX2 the kernels are an AVX2-only CPU's.
_AVX512, _AMX, _AVX_VNNI = ("avx512",), ("amx",), ("avx_vnni",)
_ISA_CAPS = {
    **dict.fromkeys(("sse41", "avx", "avx2"), _AVX512 + _AMX + _AVX_VNNI),
    **dict.fromkeys(("avx2_vnni", "avx2_vnni_2"), _AVX512 + _AMX),
    "avx512_core": ("avx512_vnni", "avx512_bf16") + _AMX,
    "avx512_core_vnni": ("avx512_bf16",) + _AMX,
    **dict.fromkeys(("avx512_core_bf16", "avx512_core_fp16", "avx10_1_512"), _AMX),
}


def cpu_flags(capped: bool = True) -> set[str] | None:
    """The CPU's feature flags (``/proc/cpuinfo``) that TensorFlow's kernels may use; None where they
    cannot be read.

    An instruction-set cap set with the ``ONEDNN_MAX_CPU_ISA`` environment variable removes the flags it
    puts out of oneDNN's reach (``AVX2``: every AVX-512, AVX-VNNI and AMX flag, as on an AVX2-only CPU):
    ``precision="auto"`` then picks float32.  ``capped=False``: the CPU's own flags (what CPUID says,
    whatever the cap).
    """
    flags = _cpu_flags()
    if flags is None or not capped:
        return flags
    return _capped(flags, os.environ.get("ONEDNN_MAX_CPU_ISA"))


def _capped(flags: set[str], cap: str | None) -> set[str]:
    """``flags`` without those oneDNN's instruction-set ``cap`` (ONEDNN_MAX_CPU_ISA's value) rules out."""
    removed = _ISA_CAPS.get((cap or "").strip().lower(), ())
    return {flag for flag in flags if not flag.startswith(removed)} if removed else flags


def use_onednn_kernels(environ=None, flags=None, tensorflow_loaded=None) -> bool:
    """Turn TensorFlow's oneDNN kernels on where its default leaves them off; ``import xrayest`` calls it.

    On an AVX2-only x86 CPU TensorFlow's default runs convolutions on Eigen's kernels, slower for
    xrayest's training than oneDNN's (``benchmarks/bench_peers.py`` measures both), so this
    sets ``TF_ENABLE_ONEDNN_OPTS=1`` there, before TensorFlow is imported (the start-up hook installed
    with xrayest, ``_xrayest_startup``, has done so already when Python started).  A value the user set
    is kept.  When TensorFlow was imported first, with the variable unset, the setting can no longer
    take effect: the first fit or prediction on the CPU then warns, once (:func:`device_scope`).
    Returns whether it set the variable.  ``flags`` default to the CPU's own (TensorFlow decides by
    CPUID, whatever ``ONEDNN_MAX_CPU_ISA`` caps).
    """
    import sys

    global _SLOW_KERNELS
    environ = os.environ if environ is None else environ
    flags = cpu_flags(capped=False) if flags is None else flags
    if not onednn_opts_wanted(environ, flags):
        return False
    if "tensorflow" in sys.modules if tensorflow_loaded is None else tensorflow_loaded:
        _SLOW_KERNELS = True
        return False
    environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
    return True


# Whether TensorFlow loaded with its oneDNN kernels off on an AVX2-only CPU (it was imported before
# xrayest, with TF_ENABLE_ONEDNN_OPTS unset); device_scope's first CPU use then warns, once.
_SLOW_KERNELS = False
SLOW_KERNELS_MESSAGE = (
    "TensorFlow was imported before xrayest on this AVX2-only CPU, so its oneDNN kernels are off (TensorFlow's "
    "default here) and xrayest trains at about half the speed (sutd_cnn on a 2-core AVX2 CPU: 25 img/s against "
    "52). Fix: put `import xrayest` before `import tensorflow` / `import keras`, or set TF_ENABLE_ONEDNN_OPTS=1 "
    "in the environment (TF_ENABLE_ONEDNN_OPTS=0 keeps TensorFlow's default and this warning away)")


def _warn_slow_kernels_once() -> None:
    global _SLOW_KERNELS
    if _SLOW_KERNELS:
        import warnings

        _SLOW_KERNELS = False
        warnings.warn(SLOW_KERNELS_MESSAGE, RuntimeWarning, stacklevel=callers_stacklevel())


# Modules whose frames stand between a user's call and the code that warns (fit's wrappers among them).
_LIBRARY_FRAMES = ("xrayest", "contextlib", "sklearn", "keras", "tensorflow", "functools")


def callers_stacklevel() -> int:
    """The ``stacklevel`` that points a warning raised in its caller at the user's line (the first frame
    outside xrayest and the libraries it runs through), so the warning names that line."""
    import inspect

    frame, level = inspect.currentframe().f_back, 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").split(".")[0] in _LIBRARY_FRAMES:
        frame, level = frame.f_back, level + 1
    return level


def cpu_supports_bfloat16() -> bool | None:
    """Whether this CPU has bfloat16 arithmetic (AMX-BF16 or AVX512-BF16); None if unknown."""
    flags = cpu_flags()
    return None if flags is None else bool(flags & _BF16_CPU_FLAGS)


def choose_precision(device_kind: str, *, cpu_flags=None, compute_capability=None) -> str:
    """The fastest precision that runs natively on a device: what ``precision="auto"`` picks.

    Parameters
    ----------
    device_kind : {"cpu", "gpu"}
    cpu_flags : set of str, optional
        The CPU's flags (``/proc/cpuinfo``); None when unknown.
    compute_capability : (int, int), optional
        An NVIDIA GPU's compute capability; None when unknown.

    Returns
    -------
    str
        "bfloat16" on a CPU with AMX-BF16 or AVX512-BF16 and on NVIDIA GPUs of compute capability 8.0 and
        newer (Ampere, Hopper, ...); "float16" on GPUs of 7.x (V100, T4: tensor cores without bfloat16);
        "float32" elsewhere, and whenever the device is not known.

    Examples
    --------
    >>> choose_precision("cpu", cpu_flags={"avx2", "fma"}), choose_precision("cpu", cpu_flags={"avx512_bf16"})
    ('float32', 'bfloat16')
    >>> choose_precision("gpu", compute_capability=(7, 5)), choose_precision("gpu", compute_capability=(9, 0))
    ('float16', 'bfloat16')
    """
    if device_kind == "cpu":
        return "bfloat16" if cpu_flags and set(cpu_flags) & _BF16_CPU_FLAGS else "float32"
    if compute_capability is None:
        return "float32"
    major = int(compute_capability[0])
    return "bfloat16" if major >= 8 else "float16" if major == 7 else "float32"


def _gpu_compute_capability(index: int):
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if index >= len(gpus):
        return None
    return tf.config.experimental.get_device_details(gpus[index]).get("compute_capability")


def resolve_precision(precision: str, device: str = "auto") -> str:
    """``precision``, with ``"auto"`` turned into :func:`choose_precision`'s answer for ``device``."""
    if precision != "auto":
        return precision
    name = resolve_device(device)
    if name.startswith("cpu"):
        return choose_precision("cpu", cpu_flags=cpu_flags())
    return choose_precision("gpu", compute_capability=_gpu_compute_capability(int(name.split(":")[1])))


def check_cpu_precision(precision: str, device: str, stacklevel: int = 3) -> None:
    """Refuse a ``precision`` the CPU's kernels cannot run; warn when it would run emulated, slower than float32.

    ``"bfloat16"`` under an instruction-set cap that leaves oneDNN no bfloat16 kernels
    (``ONEDNN_MAX_CPU_ISA`` below ``AVX512_CORE_BF16`` with TensorFlow's oneDNN kernels on: every
    convolution would fail) is a ``ValueError``.  ``"bfloat16"`` on a CPU without bfloat16 arithmetic
    and ``"float16"`` on any CPU (it is for GPUs without bfloat16: V100, T4) warn: both still work
    there, through float32.
    """
    import warnings

    if precision in ("float32", "auto") or not resolve_device(device).startswith("cpu"):
        return
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    onednn_on = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower() not in ("0", "false")
    if precision == "bfloat16" and onednn_on and not _capped({"avx512_bf16"}, cap):
        raise ValueError(f"precision='bfloat16' cannot run under ONEDNN_MAX_CPU_ISA={cap}: oneDNN has no bfloat16 "
                         "kernels below AVX512_CORE_BF16. Use precision='auto' (float32 here) or 'float32', or "
                         "lift the cap")
    if precision == "float16":
        warnings.warn("precision='float16' is for GPUs without bfloat16 (V100, T4); on a CPU it is emulated and "
                      "slower than float32: use precision='bfloat16' or 'float32' here", RuntimeWarning,
                      stacklevel=stacklevel)
    elif cpu_supports_bfloat16() is False:
        warnings.warn(
            "precision='bfloat16' on a CPU without AMX-BF16 or AVX512-BF16 is emulated and slower than "
            "float32; use precision='float32' here",
            RuntimeWarning, stacklevel=stacklevel,
        )

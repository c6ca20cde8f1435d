"""Where xrayest runs: resolve ``device="auto" | "cpu" | "gpu" | "gpu:N"``.

Asking for a GPU that is not there is an error that lists what was found; there is
never a silent fallback to the CPU.
"""

from __future__ import annotations

import contextlib
import os
import re

__all__ = ["DeviceUnavailableError", "available_devices", "resolve_device", "device_scope", "cpu_supports_bfloat16",
           "warn_if_precision_emulated", "choose_precision", "resolve_precision"]

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
    if name == "cpu:0" and available_devices()["gpu"] == 0:
        # Nothing else to run on: skip the device scope, which costs ~10% on small-op models.
        yield
        return
    with keras.device(name):
        yield


_BF16_CPU_FLAGS = {"amx_bf16", "avx512_bf16"}


# oneDNN's instruction-set caps (ONEDNN_MAX_CPU_ISA) below AVX512_CORE_BF16: under one of them
# TensorFlow's kernels have no bfloat16 arithmetic (a bfloat16 matmul is refused), and under a cap
# below AMX none have AMX.
_ISA_CAPS_WITHOUT_BF16 = {"sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2", "avx512_core", "avx512_core_vnni"}
_ISA_CAPS_WITHOUT_AMX = _ISA_CAPS_WITHOUT_BF16 | {"avx512_core_bf16", "avx512_core_fp16", "avx10_1_512"}


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags (``/proc/cpuinfo``) that TensorFlow's kernels may use; None where they
    cannot be read.

    An instruction-set cap set with the ``ONEDNN_MAX_CPU_ISA`` environment variable (``AVX2``, say)
    removes the bfloat16 flags it puts out of oneDNN's reach: ``precision="auto"`` then picks float32.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return _capped(set(line.split(":", 1)[1].split()), os.environ.get("ONEDNN_MAX_CPU_ISA"))
    except OSError:
        pass
    return None


def _capped(flags: set[str], cap: str | None) -> set[str]:
    """``flags`` without those oneDNN's instruction-set ``cap`` (ONEDNN_MAX_CPU_ISA's value) rules out."""
    cap = (cap or "").strip().lower()
    if cap in _ISA_CAPS_WITHOUT_BF16:
        return flags - _BF16_CPU_FLAGS - {"amx_tile"}
    if cap in _ISA_CAPS_WITHOUT_AMX:
        return flags - {"amx_bf16", "amx_tile"}
    return flags


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


def warn_if_precision_emulated(precision: str, device: str, stacklevel: int = 3) -> None:
    """Warn when ``precision`` would run emulated, slower than float32, on the CPU.

    ``"bfloat16"`` on a CPU without bfloat16 arithmetic; ``"float16"`` on any CPU (it is for
    GPUs without bfloat16: V100, T4).  Both still work there, through float32.
    """
    import warnings

    if precision in ("float32", "auto") or not resolve_device(device).startswith("cpu"):
        return
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

"""Where xrayest runs: resolve ``device="auto" | "cpu" | "gpu" | "gpu:N"``.

Asking for a GPU that is not there is an error that lists what was found; there is
never a silent fallback to the CPU.
"""

from __future__ import annotations

import contextlib
import re

__all__ = ["DeviceUnavailableError", "available_devices", "resolve_device", "device_scope", "cpu_supports_bfloat16",
           "warn_if_precision_emulated"]

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


def cpu_supports_bfloat16() -> bool | None:
    """Whether this CPU has bfloat16 arithmetic (AMX-BF16 or AVX512-BF16); None if unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return None


def warn_if_precision_emulated(precision: str, device: str, stacklevel: int = 3) -> None:
    """Warn when ``precision`` would run emulated, slower than float32, on the CPU.

    ``"bfloat16"`` on a CPU without bfloat16 arithmetic; ``"float16"`` on any CPU (it is for
    GPUs without bfloat16: V100, T4).  Both still work there, through float32.
    """
    import warnings

    if precision == "float32" or not resolve_device(device).startswith("cpu"):
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

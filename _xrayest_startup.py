"""TensorFlow's oneDNN kernels on for AVX2-only CPUs, before any script imports TensorFlow.

TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, when it loads, and on Linux x86 its default turns
the oneDNN kernels on only on CPUs with one of AVX512-VNNI, AVX512-BF16, AVX-VNNI or AMX
(tensorflow/core/util/port.cc): on an AVX2-only CPU its convolutions run on Eigen's kernels, which
train xrayest's networks at about half the speed.  ``import xrayest`` sets the variable, but a
script that imported ``tensorflow`` or ``keras`` first is past that point.

So installing xrayest also installs ``xrayest-startup.pth`` into site-packages, whose one line runs
:func:`set_onednn_opts` when Python starts (``site``'s documented ``.pth`` mechanism): on an AVX2-only
x86 CPU, and only if the variable is unset, it sets ``TF_ENABLE_ONEDNN_OPTS=1``, whatever the script
imports first.  ``TF_ENABLE_ONEDNN_OPTS=0`` (or any value) set by the user is kept.  This module is
outside the ``xrayest`` package and imports nothing but ``os``: Python's start-up reads one line of
``/proc/cpuinfo`` and loads neither xrayest nor TensorFlow.  It never raises.
"""

import os

# The CPU flags with which TensorFlow's Linux x86 builds turn oneDNN on by default (DefaultOneDnnPolicy).
ONEDNN_DEFAULT_FLAGS = frozenset({"avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"})


def cpu_flags():
    """The CPU's own feature flags from ``/proc/cpuinfo`` (what CPUID says); None where unreadable."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def onednn_off_by_default(flags) -> bool:
    """Whether TensorFlow leaves its oneDNN kernels off by default on a CPU with these flags: an x86 CPU
    with AVX2 but none of AVX512-VNNI, AVX512-BF16, AVX-VNNI, AMX.

    Examples
    --------
    >>> onednn_off_by_default({"avx2", "fma"}), onednn_off_by_default({"avx2", "avx512_vnni"})
    (True, False)
    """
    return flags is not None and "avx2" in flags and not set(flags) & ONEDNN_DEFAULT_FLAGS


def onednn_opts_wanted(environ, flags) -> bool:
    """Whether ``TF_ENABLE_ONEDNN_OPTS`` should be set: unset in ``environ``, on a CPU (``flags``) where
    TensorFlow's default leaves oneDNN off."""
    return "TF_ENABLE_ONEDNN_OPTS" not in environ and onednn_off_by_default(flags)


def set_onednn_opts(environ=None, flags=None) -> bool:
    """Set ``TF_ENABLE_ONEDNN_OPTS=1`` in ``environ`` (``os.environ``) where TensorFlow's default leaves
    oneDNN off (``flags``: the CPU's own by default) and the variable is unset; whether it did.

    Examples
    --------
    >>> env = {}
    >>> set_onednn_opts(env, {"avx2", "fma"}), env
    (True, {'TF_ENABLE_ONEDNN_OPTS': '1'})
    >>> env = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    >>> set_onednn_opts(env, {"avx2", "fma"}), env
    (False, {'TF_ENABLE_ONEDNN_OPTS': '0'})
    """
    try:
        environ = os.environ if environ is None else environ
        if not onednn_opts_wanted(environ, cpu_flags() if flags is None else flags):
            return False
        environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
        return True
    except Exception:  # start-up must never fail because of this
        return False

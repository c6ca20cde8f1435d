"""The ``xrayest`` command: fit, predict, evaluate, grid, featurize and demo, for folders of X-rays.

Exit codes: 0 success, 1 a user error (one line on stderr, no traceback), 2 bad usage.  The parser is
:mod:`xrayest.cli_parser`, the commands :mod:`xrayest.cli_commands`, what they share
:mod:`xrayest.cli_inputs`.
"""

from __future__ import annotations

import contextlib
import os
import sys

from .cli_inputs import UserError
from .cli_parser import CLASSIFIER_DEFAULTS, FEATURIZE_DEFAULTS, build_parser

__all__ = ["main", "console", "build_parser", "UserError", "CLASSIFIER_DEFAULTS", "FEATURIZE_DEFAULTS"]


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence TensorFlow's C++ start-up lines (CUDA probing) while it is imported."""
    try:
        saved = os.dup(2)
    except OSError:  # pragma: no cover - no stderr
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def console():
    """The ``xrayest`` command (the console entry point): quiets TensorFlow's start-up chatter for this
    process, then runs :func:`main`.  Called in-process, :func:`main` leaves the environment alone."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") == "2":  # xrayest's own default: go quieter still
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return main()


def main(argv=None):
    """Run one ``xrayest`` command (``argv`` as on the command line); returns the exit code.

    Changes no process-wide state: Keras' warnings are silenced only while the command runs.
    """
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    with _quiet_native_stderr():
        import tensorflow  # noqa: F401

        from . import classifier  # noqa: F401
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="keras")
        return _run(args)


def _run(args) -> int:
    from .cli_commands import COMMANDS
    from .device import DeviceUnavailableError
    from .feature_store import StoreBusyError
    from .trunk import WeightsChangedError
    from .weights import WeightsUnavailableError

    # What a user can cause and fix: bad values, files, a missing GPU or weights.  Anything
    # else (TypeError, RuntimeError from deeper down) is a bug and keeps its traceback.
    try:
        return COMMANDS[args.command](args)
    except (UserError, ValueError, OSError, WeightsUnavailableError, DeviceUnavailableError,
            WeightsChangedError, StoreBusyError) as exc:
        print(f"xrayest {args.command}: error: {_cli_words(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("xrayest: interrupted", file=sys.stderr)
        return 130


def _cli_words(message: str) -> str:
    """A library message in the command line's words: ``weights=...`` advice becomes ``--weights ...``."""
    import re

    message = re.sub(r"weights='([^']*)'", r"--weights \1", message)
    return message.replace("weights=None", "--weights none")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(console())

"""The feature cache: frozen-backbone outputs kept by image content and trunk configuration.

A frozen backbone's output never changes, so xrayest runs it once per distinct image.
``FeatureCache`` keeps those outputs keyed by *trunk configuration* (a hash that
includes the weights fingerprint and the compute precision, see
``TrunkConfig.cache_key`` in ``xrayest.trunk``) and *image content*, so clones,
cross-validation folds and grid-search candidates share them.

The cache lives in memory (least-recently-used entries are dropped past ``max_bytes``)
and, optionally, on disk under ``directory`` (one ``.npz`` per image holding the features
and a BLAKE2 checksum of them, written atomically, so parallel workers and later processes
share it).  A disk entry that is damaged, edited, of the wrong shape or not finite fails
its check on read: it is recomputed and overwritten, with one warning per cache.  A
directory that cannot be written leaves the cache in memory, with one warning.

The in-memory bound is ``XRAYEST_FEATURE_CACHE_MB`` megabytes (default 1024), read when
the process-wide cache is first used.  It also remembers the per-image
feature shape of each configuration it has seen, so an estimator can size its head or
report ``n_features_out_`` without building the backbone.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

__all__ = ["FeatureCache", "default_cache", "estimator_cache"]

DEFAULT_MB = 1024


def default_max_bytes() -> int:
    """The memory bound of the process-wide caches: ``XRAYEST_FEATURE_CACHE_MB`` megabytes (default 1024)."""
    raw = os.environ.get("XRAYEST_FEATURE_CACHE_MB", "").strip()
    if not raw:
        return DEFAULT_MB * 2**20
    try:
        mb = float(raw)
    except ValueError:
        mb = float("nan")
    if not np.isfinite(mb) or mb < 0:
        raise ValueError(f"XRAYEST_FEATURE_CACHE_MB must be a non-negative number of megabytes (0: no in-memory "
                         f"cache); got {raw!r}")
    return int(mb * 2**20)


def _checksum(features: np.ndarray) -> np.ndarray:
    digest = hashlib.blake2b(f"{features.dtype.str}{features.shape}".encode(), digest_size=16)
    digest.update(np.ascontiguousarray(features).tobytes())
    return np.frombuffer(digest.digest(), dtype=np.uint8)


class FeatureCache:
    """Bounded map ``(config key, image key) -> feature array``, in memory and optionally on disk.

    Parameters
    ----------
    max_bytes : int
        Memory bound; least recently used features are evicted beyond it.
    directory : path-like, optional
        Also keep features as ``directory/<config>/<image>.npy``.  Disk entries are not
        evicted; delete the folder to reclaim space.
    """

    def __init__(self, max_bytes: int | None = None, directory=None):
        self.max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)
        self.directory = Path(directory) if directory is not None else None
        self._entries: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._shapes: dict[str, tuple] = {}
        self.hits = 0
        self.misses = 0
        self.rejected = 0  # disk entries that failed their check and were recomputed
        self._warned: set[str] = set()
        self._disk_writable = True

    def __len__(self):
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self):
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def shape(self, config: str):
        """Per-image feature shape of configuration ``config``, if any of its features were seen."""
        return self._shapes.get(config)

    def _disk_path(self, config: str, key: str) -> Path:
        return self.directory / config[:24] / f"{key}.npz"

    def _warn_once(self, kind: str, message: str):
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _read_disk(self, config: str, path: Path):
        """The features in ``path`` if they pass every check, else None (counted, warned about once)."""
        try:
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as entry:
                features, checksum = entry["features"], entry["checksum"]
            expected = self._shapes.get(config)
            problem = ("checksum mismatch" if not np.array_equal(checksum, _checksum(features)) else
                       f"shape {features.shape}, expected {expected}" if expected and features.shape != expected else
                       "values that are not finite" if features.dtype.kind == "f" and not np.isfinite(features).all()
                       else None)
        # truncated, not a zip, missing arrays
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            problem = f"unreadable ({type(exc).__name__})"
        if problem is None:
            return features
        self.rejected += 1
        self._warn_once("corrupt", f"feature cache entry {path.name} in {path.parent} failed its check ({problem}); "
                                   "recomputing it (further bad entries of this cache are recomputed silently)")
        return None

    def get(self, config: str, key: str):
        with self._lock:
            found = self._entries.get((config, key))
            if found is not None:
                self._entries.move_to_end((config, key))
                self.hits += 1
                return found
        if self.directory is not None:
            path = self._disk_path(config, key)
            if path.is_file():
                found = self._read_disk(config, path)  # a damaged entry is recomputed, never trusted
                if found is not None:
                    self._remember(config, key, found)
                    self.hits += 1
                    return found
        self.misses += 1
        return None

    def put(self, config: str, key: str, features: np.ndarray):
        features = np.array(features, copy=True)
        features.flags.writeable = False
        self._remember(config, key, features)
        if self.directory is not None and self._disk_writable:
            try:
                self._write_disk(self._disk_path(config, key), features)
            except OSError as exc:  # read-only or full: the features computed so far are kept in memory
                self._disk_writable = False
                self._warn_once("readonly", f"cannot write the feature cache in {self.directory} "
                                            f"({exc.strerror or exc}); keeping features in memory only for this "
                                            "process")

    @staticmethod
    def _write_disk(path: Path, features: np.ndarray):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, features=features, checksum=_checksum(features))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _remember(self, config, key, features):
        self._shapes.setdefault(config, tuple(features.shape))
        if features.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop((config, key), None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[(config, key)] = features
            self._bytes += features.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes


_DEFAULT_CACHE: FeatureCache | None = None
_DISK_CACHES: dict[str, FeatureCache] = {}


def default_cache(directory=None) -> FeatureCache:
    """The process-wide in-memory cache, or the one bound to ``directory``."""
    global _DEFAULT_CACHE
    if directory is None:
        if _DEFAULT_CACHE is None:
            _DEFAULT_CACHE = FeatureCache()
        return _DEFAULT_CACHE
    directory = str(Path(directory).resolve())
    if directory not in _DISK_CACHES:
        _DISK_CACHES[directory] = FeatureCache(directory=directory)
    return _DISK_CACHES[directory]


def estimator_cache(estimator) -> FeatureCache | None:
    """The cache an estimator's ``cache_features`` / ``cache_dir`` parameters ask for (None: no caching)."""
    return default_cache(estimator.cache_dir) if estimator.cache_features else None

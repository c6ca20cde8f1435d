"""The feature cache: frozen-backbone outputs kept by image content and trunk configuration.

A frozen backbone's output never changes, so xrayest runs it once per distinct image.
:class:`FeatureCache` keeps those outputs keyed by *trunk configuration* (a hash that
includes the weights fingerprint and the compute precision, see
:attr:`xrayest.trunk.TrunkRecipe.cache_key`) and *image content*, so clones,
cross-validation folds and grid-search candidates share them.

The cache lives in memory (least-recently-used entries are dropped past ``max_bytes``)
and, optionally, on disk under ``directory`` (one ``.npy`` per image, written atomically,
so parallel workers and later processes share it).  It also remembers the per-image
feature shape of each configuration it has seen, so an estimator can size its head or
report ``n_features_out_`` without building the backbone.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

__all__ = ["FeatureCache", "default_cache", "estimator_cache", "config_key"]

DEFAULT_MAX_BYTES = int(float(os.environ.get("XRAYEST_FEATURE_CACHE_MB", "1024")) * 2**20)


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

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, directory=None):
        self.max_bytes = int(max_bytes)
        self.directory = Path(directory) if directory is not None else None
        self._entries: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._shapes: dict[str, tuple] = {}
        self.hits = 0
        self.misses = 0

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
        return self.directory / config[:24] / f"{key}.npy"

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
                try:
                    found = np.load(path, allow_pickle=False)
                except (OSError, ValueError):
                    found = None  # a damaged entry is recomputed, never trusted
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
        if self.directory is not None:
            path = self._disk_path(config, key)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.save(fh, features, allow_pickle=False)
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


_DEFAULT_CACHE = FeatureCache()
_DISK_CACHES: dict[str, FeatureCache] = {}


def default_cache(directory=None) -> FeatureCache:
    """The process-wide in-memory cache, or the one bound to ``directory``."""
    if directory is None:
        return _DEFAULT_CACHE
    directory = str(Path(directory).resolve())
    if directory not in _DISK_CACHES:
        _DISK_CACHES[directory] = FeatureCache(directory=directory)
    return _DISK_CACHES[directory]


def estimator_cache(estimator) -> FeatureCache | None:
    """The cache an estimator's ``cache_features`` / ``cache_dir`` parameters ask for (None: no caching)."""
    return default_cache(estimator.cache_dir) if estimator.cache_features else None


def config_key(**config) -> str:
    """Stable hash of a backbone configuration (plain JSON-able values)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()

"""A resumable Zarr store of frozen-backbone features, and estimator input that reads from it.

Layout of a store (a Zarr v3 group, a folder on disk or any path Zarr opens):

- ``features``: ``(n, *feature_shape)`` float32, chunked by the featurization chunk;
- ``keys``: ``(n,)`` the content key of each image (the feature cache's key: a hash of the file's
  bytes and the model's input size), written with its features;
- ``paths``, and ``labels`` when known: ``(n,)`` strings;
- ``done``: ``(n_chunks,)`` bool, set once a chunk's features and keys are written;
- attributes: ``fingerprint`` (the trunk's cache key: backbone, weights fingerprint, size,
  preprocessing, pooling, precision, Keras version), ``config`` (how to rebuild the trunk),
  ``chunk``, ``image_size``, ``format``.

Each chunk of rows is one Zarr chunk of every array, so tasks writing different chunks never touch
the same object; ``done`` is written last, so a chunk interrupted mid-write is simply recomputed.

:meth:`~xrayest.FeatureStore.rows` gives the estimators their input: an object array of
:class:`~xrayest.feature_store.StoreRow` (store, row, path, key) that ``XrayCNNClassifier`` /
``FeatureExtractor`` accept as ``X`` and scikit-learn slices like any array.  Their features come
from the store when the store's fingerprint is the estimator's trunk's (the images are not read);
otherwise from the images, as for paths, with one warning.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .inputs import ImageSource, PathImages

__all__ = ["FeatureStore", "StoreRow", "StoreRowImages", "FORMAT", "StoreMismatchError", "StoreBusyError"]

FORMAT = 1


class StoreMismatchError(ValueError):
    """A store built for other images or another trunk than the one asked for."""


class StoreBusyError(RuntimeError):
    """Another ``featurize`` is writing the store (it holds the store's lock)."""


def _zarr():
    try:
        import zarr
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError('feature stores need zarr: pip install "xrayest[distributed]"') from exc
    return zarr


@dataclass(frozen=True)
class StoreRow:
    """One image of a :class:`FeatureStore`: where its features are, and its file (a fallback)."""

    store: str
    index: int
    path: str
    key: str

    @classmethod
    def image_source(cls, rows) -> "StoreRowImages":
        """How ``xrayest.inputs.as_image_source`` reads a list of rows."""
        return StoreRowImages(rows)


class FeatureStore:
    """A Zarr feature store: open an existing one, or create one with :meth:`~xrayest.FeatureStore.create`."""

    def __init__(self, group, location):
        self.group = group
        self.location = str(location)

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(cls, location, mode="r") -> "FeatureStore":
        """Open the store at ``location`` (``mode="r"`` to read, ``"r+"`` to write chunks)."""
        zarr = _zarr()
        try:
            group = zarr.open_group(str(location), mode=mode)
        except (FileNotFoundError, ValueError) as exc:
            raise FileNotFoundError(f"no xrayest feature store at {location}: {exc}") from exc
        if group.attrs.get("format") is None or "features" not in group:
            raise ValueError(f"{location} is a Zarr group but not an xrayest feature store (no format/features)")
        if group.attrs["format"] > FORMAT:
            raise ValueError(f"{location} was written by a newer xrayest (store format {group.attrs['format']})")
        store = cls(group, location)
        store.check()
        return store

    @staticmethod
    def is_marked(location) -> bool:
        """Whether ``location`` is a Zarr group that xrayest made a store of (its ``format`` marker), even one
        damaged since: what ``featurize(..., overwrite=True)`` may replace."""
        if not Path(location).is_dir():
            return False
        try:
            group = _zarr().open_group(str(location), mode="r")
        except (FileNotFoundError, ValueError, KeyError, OSError):
            return False
        return group.attrs.get("format") is not None

    def check(self) -> None:
        """Refuse a store edited or damaged by hand: missing attributes or arrays, or arrays of other lengths.

        Raises ``ValueError`` naming the store and what is wrong.
        """
        def bad(problem):
            raise ValueError(f"feature store {self.location} is damaged: {problem}; featurize it again with "
                             "overwrite=True (CLI: --overwrite)")

        attrs = dict(self.group.attrs)
        absent = [a for a in ("fingerprint", "config", "chunk", "image_size") if a not in attrs]
        if absent:
            bad(f"attribute(s) {absent} missing")
        if not isinstance(attrs["chunk"], int) or attrs["chunk"] < 1:
            bad(f"attribute chunk is {attrs['chunk']!r}, not a positive integer")
        arrays = [a for a in ("features", "keys", "paths", "done") if a not in self.group]
        if arrays:
            bad(f"array(s) {arrays} missing")
        n = self.group["features"].shape[0]
        lengths = {name: self.group[name].shape[0] for name in ("keys", "paths", *(["labels"] if "labels" in
                                                                                 self.group else []))}
        wrong = {name: length for name, length in lengths.items() if length != n}
        if wrong:
            bad(f"{n} feature rows but {', '.join(f'{length} {name}' for name, length in wrong.items())}")
        chunks = max(1, -(-n // attrs["chunk"]))
        if self.group["done"].shape[0] != chunks:
            bad(f"{self.group['done'].shape[0]} done flags for {chunks} chunks of {attrs['chunk']}")

    @classmethod
    def create(cls, location, *, paths, labels, fingerprint, config, feature_shape, image_size,
               chunk) -> "FeatureStore":
        """A new, empty store for ``paths`` (nothing done yet)."""
        zarr = _zarr()
        group = zarr.open_group(str(location), mode="w")
        n = len(paths)
        n_chunks = max(1, -(-n // chunk))
        group.create_array("features", shape=(n, *feature_shape), chunks=(chunk, *feature_shape), dtype="float32",
                           fill_value=0.0)
        group.create_array("keys", shape=(n,), chunks=(chunk,), dtype=str, fill_value="")
        group.create_array("paths", shape=(n,), chunks=(max(n, 1),), dtype=str)[:] = np.asarray(paths, dtype=str)
        if labels is not None:
            group.create_array("labels", shape=(n,), chunks=(max(n, 1),), dtype=str)[:] = np.asarray(labels, dtype=str)
        group.create_array("done", shape=(n_chunks,), chunks=(1,), dtype=bool, fill_value=False)
        group.attrs.update({"format": FORMAT, "fingerprint": fingerprint, "config": config, "chunk": int(chunk),
                            "image_size": list(image_size)})
        return cls(group, location)

    # ---------------------------------------------------------------- what it holds
    def __len__(self) -> int:
        return int(self.group["features"].shape[0])

    @property
    def fingerprint(self) -> str:
        return self.group.attrs["fingerprint"]

    @property
    def config(self) -> dict:
        return dict(self.group.attrs["config"])

    @property
    def chunk(self) -> int:
        return int(self.group.attrs["chunk"])

    @property
    def image_size(self) -> tuple:
        return tuple(self.group.attrs["image_size"])

    @property
    def paths(self) -> np.ndarray:
        return np.array([str(p) for p in self.group["paths"][:]], dtype=object)

    @property
    def labels(self) -> np.ndarray | None:
        if "labels" not in self.group:
            return None
        return np.array([str(v) for v in self.group["labels"][:]])

    @property
    def features(self):
        """The Zarr array of features (slice it: ``store.features[:100]``)."""
        return self.group["features"]

    def chunk_bounds(self, i: int) -> tuple[int, int]:
        return i * self.chunk, min((i + 1) * self.chunk, len(self))

    def done(self) -> np.ndarray:
        """Which chunks are complete."""
        return np.asarray(self.group["done"][:], dtype=bool)

    def missing(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(~self.done())]

    def is_complete(self) -> bool:
        return bool(self.done().all())

    def write_chunk(self, i: int, features: np.ndarray, keys, *, fingerprint=None) -> None:
        """Features and keys of chunk ``i``, then its done flag (last: an interrupted write is redone).

        With ``fingerprint`` (the trunk that computed ``features``), the store's fingerprint is read again
        from disk first, and a store re-created since by another trunk is refused
        (``StoreMismatchError``): a chunk is written only into the store of the trunk
        that made it.
        """
        if fingerprint is not None:
            current = _zarr().open_group(self.location, mode="r").attrs.get("fingerprint")
            if current != fingerprint:
                raise StoreMismatchError(f"feature store {self.location} was replaced by another trunk's store "
                                         f"while chunk {i} was computed; nothing was written (run one featurize "
                                         "per store at a time)")
        start, stop = self.chunk_bounds(i)
        self.group["features"][start:stop] = np.asarray(features, np.float32)
        self.group["keys"][start:stop] = np.asarray(keys, dtype=str)
        self.group["done"][i] = True

    def rows(self) -> np.ndarray:
        """Estimator input: an object array of :class:`~xrayest.feature_store.StoreRow`, one per image.

        Complete stores only.
        """
        if not self.is_complete():
            raise ValueError(f"feature store {self.location} is incomplete ({len(self.missing())} chunks missing); "
                             "run featurize again to finish it")
        keys = [str(k) for k in self.group["keys"][:]]
        location = str(Path(self.location).resolve()) if Path(self.location).exists() else self.location
        out = np.empty(len(self), dtype=object)
        out[:] = [StoreRow(location, i, str(p), k) for i, (p, k) in enumerate(zip(self.paths, keys))]
        return out

    def read(self, indices) -> np.ndarray:
        """Features of rows ``indices`` (any order, repeats allowed)."""
        indices = np.asarray(indices, dtype=np.intp)
        if not len(indices):
            return np.zeros((0, *self.features.shape[1:]), np.float32)
        unique, inverse = np.unique(indices, return_inverse=True)
        block = np.asarray(self.features.get_orthogonal_selection((unique, *[slice(None)] * (self.features.ndim - 1))),
                           np.float32)
        finite = np.isfinite(block.reshape(len(unique), -1)).all(axis=1)
        if not finite.all():
            rows = unique[~finite]
            raise ValueError(f"feature store {self.location} holds non-finite features in rows "
                             f"{', '.join(map(str, rows[:5]))}{', ...' if len(rows) > 5 else ''} "
                             f"({len(rows)} rows); featurize it again with overwrite=True (CLI: --overwrite)")
        return block[inverse]

    def stale_chunks(self, keys) -> list[int]:
        """Done chunks holding a row whose content key is not ``keys``' (an image edited or replaced since)."""
        stored = [str(k) for k in self.group["keys"][:]]
        changed = [i for i, (a, b) in enumerate(zip(stored, keys)) if a != str(b)]
        done = self.done()
        return sorted({i // self.chunk for i in changed if done[i // self.chunk]})

    def redo(self, chunks) -> None:
        """Clear the done flags of ``chunks`` (featurize computes them again)."""
        for i in chunks:
            self.group["done"][int(i)] = False

    def describe(self) -> str:
        config = self.config
        return (f"{len(self)} images, features {tuple(self.features.shape[1:])} from {config.get('backbone')} "
                f"({config.get('precision')}, {tuple(self.image_size)} px, pooling {config.get('pooling')}), "
                f"{int(self.done().sum())}/{len(self.done())} chunks done")


class StoreRowImages(ImageSource):
    """An :class:`~xrayest.inputs.ImageSource` over store rows: features from the store, pixels from the files."""

    kind = "store"

    def __init__(self, rows):
        self.rows = list(rows)
        self._files = PathImages([r.path for r in self.rows])
        self._warned = False

    def __len__(self):
        return len(self.rows)

    def batch(self, start, stop, size=None):
        return self._files.batch(start, stop, size)

    def keys(self, size=None):
        stores = {r.store for r in self.rows}
        sizes = {tuple(FeatureStore.open(s).image_size) for s in stores}
        if size is not None and sizes == {tuple(size)}:
            return [r.key for r in self.rows]
        return self._files.keys(size)  # another input size: the keys of the files themselves

    def subset(self, indices):
        return StoreRowImages([self.rows[i] for i in np.asarray(indices, dtype=np.intp)])

    def stored(self, cache_key) -> dict:
        """Features for this source's keys from its store(s) built by the trunk ``cache_key``; {} otherwise."""
        out = {}
        by_store: dict[str, list[StoreRow]] = {}
        for row in self.rows:
            by_store.setdefault(row.store, []).append(row)
        for location, rows in by_store.items():
            store = FeatureStore.open(location)
            if store.fingerprint != cache_key:
                if not self._warned:
                    self._warned = True
                    warnings.warn(f"feature store {location} was computed by another trunk configuration "
                                  f"({json.dumps(store.config)}); computing features from the images instead",
                                  UserWarning, stacklevel=4)
                continue
            features = store.read([r.index for r in rows])
            out.update({r.key: f for r, f in zip(rows, features)})
        return out

"""Featurize a collection on a Dask cluster (or in this process) into a resumable Zarr feature store.

:func:`~xrayest.featurize` splits the images into chunks of rows; each chunk is one task that computes the
frozen trunk's features and the images' content keys and writes them into the store
(:mod:`xrayest.feature_store`).  With a ``dask.distributed`` ``Client`` the tasks run on its workers;
each worker process builds the trunk once and keeps it for every later task (a per-process table
of trunks, keyed by their configuration).  Without one they run here, through the same function.

Resumable and idempotent: the store records the chunks that are done; a rerun after a crash, a
killed worker or Ctrl-C computes only the missing chunks, and since a chunk's rows are always
computed together, in the same batches, the result is the same bytes as an uninterrupted run.
Dask reschedules the task of a worker that dies.  A store made for other images or by another
trunk is refused (:class:`~xrayest.feature_store.StoreMismatchError`).

One writer per store: ``featurize`` holds a lock file beside the store (``<store>.lock``) while it
runs, and a second ``featurize`` of the same store is refused
(:class:`~xrayest.feature_store.StoreBusyError`); each chunk is written only after the store's
fingerprint, read again from disk, is found to be the one of the trunk that computed the chunk.

Needs the ``[distributed]`` extra (``pip install "xrayest[distributed]"``: dask.distributed, zarr).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path


from .feature_store import FeatureStore, StoreBusyError, StoreMismatchError

__all__ = ["featurize", "FeaturizeReport"]

_TRUNKS: dict[str, object] = {}  # per process: trunk configuration (JSON) -> built Trunk
_LOCK = threading.Lock()  # one trunk per process may be shared by a worker's threads


class FeaturizeReport(dict):
    """What :func:`~xrayest.featurize` did: ``store``, ``n_images``, ``chunks_total``, ``chunks_computed``,
    ``chunks_stale`` (done chunks computed again because an image's content changed since),
    ``seconds``, ``trunk_seconds`` (summed over tasks) and ``images_per_second``."""


def _image_list(images, labels):
    """Paths (and labels) from a folder (class sub-folders give labels), a list of paths, or store rows."""
    from .datasets import list_images, load_image_folder

    if isinstance(images, (str, Path)):
        root = Path(images)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        subfolders = [p for p in root.iterdir() if p.is_dir()]
        direct = [p for p in root.iterdir() if p.is_file()]
        if subfolders and not direct and labels is None:
            paths, found = load_image_folder(root, return_paths=True)
            return [str(p) for p in paths], [str(v) for v in found]
        paths = [str(p) for p in list_images(root)]
        if not paths:
            raise ValueError(f"no images found under {root}")
        return paths, labels
    paths = [str(p) for p in images]
    if not paths:
        raise ValueError("images is empty")
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"labels has {len(labels)} entries for {len(paths)} images")
    return paths, None if labels is None else [str(v) for v in labels]


def _backbone_spec(backbone):
    """The registry entry of ``backbone``: featurize rebuilds the trunk on every worker from its name."""
    from .backbones import get_backbone_spec

    if not isinstance(backbone, str):
        raise ValueError("featurize builds the trunk on every worker from its name: pass a registry backbone name, "
                         f"not {type(backbone).__name__}")
    return get_backbone_spec(backbone)


def _trunk_config(spec, weights, image_size, pooling, precision, random_state, batch_size, device) -> dict:
    """The trunk as plain data (JSON: the store records it, workers rebuild the trunk from it)."""
    from .backbones import image_size_for
    from .weights import recorded_weights

    size = image_size_for(spec, image_size)
    return {"backbone": spec.name, "weights": recorded_weights(weights), "image_size": list(size), "pooling": pooling,
            "precision": precision, "random_state": random_state, "batch_size": int(batch_size), "device": device}


def _trunk(config: dict):
    """The frozen trunk of ``config``, built once per process."""
    key = json.dumps(config, sort_keys=True)
    with _LOCK:
        trunk = _TRUNKS.get(key)
        if trunk is None:
            trunk = _TRUNKS[key] = _frozen_trunk(config)
    return trunk


def _frozen_trunk(config: dict, spec=None):
    """The frozen trunk a store's ``config`` describes (BatchNorm folded, features keyed for caching); ``spec``:
    its backbone's registry entry when the caller has it.  A worker has only the config's name, which crossed
    the process boundary as plain data: it is resolved here, once per worker process (``_trunk``)."""
    from .trunk import Trunk

    spec = _backbone_spec(config["backbone"]) if spec is None else spec
    return Trunk.frozen(spec, config["weights"], tuple(config["image_size"]),
                        pooling=config["pooling"], seed=config["random_state"], precision=config["precision"],
                        fold_batch_norm=True, cache=True)


def _run_chunk(location: str, i: int, config: dict) -> tuple[int, float]:
    """Compute and write chunk ``i`` of the store at ``location``; returns ``(i, seconds in the trunk)``.

    A chunk already done is skipped (a task Dask runs twice writes nothing twice).
    """
    from .device import device_scope
    from .inputs import PathImages

    store = FeatureStore.open(location, mode="r+")
    if store.done()[i]:
        return i, 0.0
    start, stop = store.chunk_bounds(i)
    source = PathImages([str(p) for p in store.group["paths"][start:stop]])
    size = tuple(config["image_size"])
    keys = source.keys(size)
    trunk = _trunk(config)
    begin = time.perf_counter()
    with _LOCK, device_scope(config["device"]):
        features = trunk.features(source, batch_size=config["batch_size"], cache=None)
    seconds = time.perf_counter() - begin
    store.write_chunk(i, features, keys, fingerprint=trunk.cache_key)
    return i, seconds


def _writer_lock(location):
    """Held while ``featurize`` writes the store at ``location``: a lock file beside it (``<store>.lock``).

    A second ``featurize`` of the same store is refused (:class:`~xrayest.feature_store.StoreBusyError`)
    instead of mixing its rows into the first one's.
    """
    from filelock import FileLock, Timeout

    path = Path(location).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.parent / f"{path.name}.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise StoreBusyError(f"feature store {location} is being written by another featurize (it holds "
                             f"{lock.lock_file}); wait for it to finish, or write to another store") from None
    return lock


def _replaceable(location) -> bool:
    """Whether ``overwrite`` may replace what is at ``location``: an empty folder or a Zarr group carrying
    xrayest's store marker (its ``format`` attribute), damaged or not."""
    path = Path(location)
    if path.is_dir() and not any(path.iterdir()):
        return True
    return FeatureStore.is_marked(location)


def _open_or_create(location, paths, labels, config, chunk, overwrite, spec):
    """The store at ``location``: reused when it was made for these images by this trunk, else created."""
    trunk = _frozen_trunk(config, spec)
    if trunk.cache_key is None:
        raise ValueError("random weights without random_state are not reproducible: pass random_state (or weights)")
    if overwrite and Path(location).exists() and not _replaceable(location):
        raise ValueError(f"{location} exists and is not an xrayest feature store: overwrite replaces only a feature "
                         "store, never other files; nothing was changed (give a new or empty folder)")
    if Path(location).exists() and not overwrite:
        store = FeatureStore.open(location, mode="r+")
        if store.fingerprint != trunk.cache_key:
            raise StoreMismatchError(
                f"feature store {location} was built by another trunk ({json.dumps(store.config)}), not "
                f"({json.dumps(config)}); pass overwrite=True (CLI: --overwrite) or another store path")
        if list(store.paths) != list(paths):
            raise StoreMismatchError(f"feature store {location} holds other images ({len(store.paths)} there, "
                                     f"{len(paths)} asked for, or another order); pass overwrite=True "
                                     "(CLI: --overwrite) or another store path")
        return store  # resumed in its own chunks, whatever ``chunk`` says: they are the store's layout
    _TRUNKS.setdefault(json.dumps(config, sort_keys=True), trunk)
    shape = tuple(trunk.output_shape(None))
    return FeatureStore.create(location, paths=paths, labels=labels, fingerprint=trunk.cache_key, config=config,
                               feature_shape=shape, image_size=config["image_size"], chunk=chunk)


def featurize(images, store, *, backbone="xception", weights="imagenet", image_size=None, pooling="avg",
              precision="auto", labels=None, client=None, chunk=256, batch_size=32, device="cpu",
              random_state=None, overwrite=False, progress=False) -> FeaturizeReport:
    """Compute frozen-backbone features of ``images`` into the Zarr store ``store``, resumably.

    Parameters
    ----------
    images : path or sequence of paths
        A folder (class sub-folders give labels, as :func:`~xrayest.load_image_folder`; otherwise
        every image under it) or image paths.
    store : path
        Where the Zarr store is (created, or resumed when it holds these images from this trunk).
    backbone, weights, image_size, pooling, precision, random_state
        The trunk, as for :class:`~xrayest.XrayCNNClassifier`; keep ``pooling`` (default "avg") and
        ``precision`` equal to the estimator's so it reads these features instead of computing its own.
        ``precision="auto"`` is resolved on the machine that calls this function, for ``device``, and
        the store records the precision chosen.
    labels : sequence, optional
        Stored beside the features (default: the class folder names).
    client : dask.distributed.Client, optional
        Run the chunks on its workers; None runs them in this process with the same code.
    chunk : int, default=256
        Images per task (and per Zarr chunk).
    batch_size : int, default=32
    device : str, default="cpu"
        Device each task runs on (``"gpu:N"`` on a worker with that GPU).
    overwrite : bool, default=False
        Replace a store made for other images or by another trunk instead of refusing it.
    progress : bool, default=False
        A progress bar: Dask's for a client, tqdm in-process.

    Returns
    -------
    FeaturizeReport

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> from xrayest.feature_store import FeatureStore
    >>> d = tempfile.mkdtemp()
    >>> for i in range(5):
    ...     Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(f"{d}/{i}.png")
    >>> report = featurize(d, f"{d}/features.zarr", backbone="small_cnn", weights=None, image_size=16,
    ...                    random_state=0, chunk=2)
    >>> report["chunks_computed"], FeatureStore.open(f"{d}/features.zarr").features.shape
    (3, (5, 128))
    >>> featurize(d, f"{d}/features.zarr", backbone="small_cnn", weights=None, image_size=16,
    ...           random_state=0, chunk=2)["chunks_computed"]   # resumed: nothing left to do
    0
    """
    from .device import resolve_device, resolve_precision
    from .params import validate_arguments

    validate_arguments("featurize", backbone=backbone, weights=weights, image_size=image_size, pooling=pooling,
                       precision=precision, chunk=chunk, batch_size=batch_size, device=device,
                       random_state=random_state, overwrite=overwrite, progress=progress)
    resolve_device(device)  # a GPU that is not here is an error before any work
    precision = resolve_precision(precision, device)
    begin = time.perf_counter()
    paths, labels = _image_list(images, labels)
    spec = _backbone_spec(backbone)
    config = _trunk_config(spec, weights, image_size, pooling, precision, random_state, batch_size, device)
    with _writer_lock(store):
        target = _open_or_create(store, paths, labels, config, int(chunk), overwrite, spec)
        stale = []
        if target.done().any():  # resumed: images edited or replaced since their chunk was written are redone
            from .inputs import PathImages

            stale = target.stale_chunks(PathImages(paths).keys(tuple(config["image_size"])))
            target.redo(stale)
        todo = target.missing()
        trunk_seconds = _run_chunks(str(Path(store).resolve()), todo, config, client, progress)
        if not target.is_complete():  # pragma: no cover - every task either wrote its chunk or raised
            raise RuntimeError(f"feature store {store} is still missing chunks {target.missing()}")
    seconds = time.perf_counter() - begin
    n_done = sum(min(target.chunk_bounds(i)[1], len(paths)) - target.chunk_bounds(i)[0] for i in todo)
    return FeaturizeReport(store=str(store), n_images=len(paths), chunks_total=len(target.done()),
                           chunks_computed=len(todo), chunks_stale=len(stale), seconds=seconds,
                           trunk_seconds=trunk_seconds,
                           images_per_second=n_done / seconds if seconds and n_done else 0.0)


def _run_chunks(location, todo, config, client, progress) -> float:
    """Chunks ``todo`` of the store at ``location`` computed and written, here (``client`` None) or on the
    client's workers; returns the seconds spent in the trunk."""
    trunk_seconds = 0.0
    if client is None:
        bar = None
        if progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), unit="chunk", desc="featurize")
        for i in todo:
            _, seconds = _run_chunk(location, i, config)
            trunk_seconds += seconds
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    elif todo:
        from distributed import as_completed

        futures = client.map(_run_chunk, [location] * len(todo), todo, [config] * len(todo), pure=False)
        if progress:
            from distributed import progress as dask_progress

            dask_progress(futures)
        for future in as_completed(futures):
            _, seconds = future.result()
            trunk_seconds += seconds
    return trunk_seconds

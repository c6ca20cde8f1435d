"""Featurization throughput: in-process vs a Dask LocalCluster, and a grid search on the cluster vs serial.

Images: the 305 BU X-rays, each repeated with small random crops until there are --n (default 2,048)
distinct files (written to a temporary folder, PNG, 224 px). Trunk: Xception with the local ImageNet
weights at --image-size (150) in --precision (bfloat16), pooled features (2,048 floats a row).

Side by side in one run, each into a fresh Zarr store with the same chunks:
- serial: xrayest.distributed.featurize(client=None), this process;
- LocalCluster, 2 worker processes x 1 thread;
- LocalCluster, 1 worker process x 2 threads.
For each: wall seconds (cluster start-up reported apart), images/s, the seconds tasks spent in the
trunk, and the overhead per chunk: (wall x task slots - trunk seconds) / chunks, i.e. the time per chunk
a slot was not running the trunk (reading and hashing files, scheduling, writing the store, idling).
Also: the store write rate, and the grid search of bench_grid (dropout x learning rate, 3 folds) on the
store's rows, serial vs n_jobs=-1 under joblib's Dask backend (scores must be equal).

    python benchmarks/bench_distributed.py [--n 2048] [--chunk 128] [--image-size 150]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import BU_DATA, append_results, markdown_table, require_bu_data, xception_weights

GRID = {"dropout": [0.2, 0.5, 0.8], "learning_rate": [1e-3, 5e-4, 1e-4]}


def make_images(out: Path, n: int, seed=0):
    """``n`` distinct PNGs: BU images, each copy a random 85-100% crop resized to 224 px."""
    from PIL import Image

    sources = sorted(p for p in BU_DATA.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        with Image.open(sources[i % len(sources)]) as img:
            img = img.convert("L")
            w, h = img.size
            scale = rng.uniform(0.85, 1.0)
            cw, ch = int(w * scale), int(h * scale)
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            img = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((224, 224), Image.BILINEAR)
            path = out / f"{i:05d}.png"
            img.save(path)
            paths.append(str(path))
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=150)
    parser.add_argument("--precision", default="bfloat16")
    parser.add_argument("--grid-epochs", type=int, default=10)
    args = parser.parse_args()
    require_bu_data()

    from distributed import Client, LocalCluster
    from joblib import parallel_backend
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from xrayest import XrayCNNClassifier, load_image_folder
    from xrayest.distributed import featurize
    from xrayest.feature_store import FeatureStore

    weights = xception_weights()
    work = Path(tempfile.mkdtemp(prefix="xrayest-bench-distributed-"))
    try:
        start = time.perf_counter()
        paths = make_images(work / "images", args.n)
        print(f"{len(paths)} images written in {time.perf_counter() - start:.0f} s")
        trunk = dict(backbone="xception", weights=weights, image_size=args.image_size, precision=args.precision,
                     chunk=args.chunk, batch_size=32)
        n_chunks = -(-len(paths) // args.chunk)
        rows, stores = [], {}

        def record(name, slots, report, startup):
            wall = report["seconds"]
            overhead = (wall * slots - report["trunk_seconds"]) / n_chunks
            rows.append([name, slots, f"{startup:.1f}", f"{wall:.1f}", f"{len(paths) / wall:.1f}",
                         f"{report['trunk_seconds']:.1f}", f"{overhead:.2f}"])
            print(rows[-1], flush=True)

        # reading + decoding + resizing + content-hashing alone, one core: what a GPU worker's host must keep up with
        from xrayest.inputs import PathImages

        sample = PathImages(paths[:512])
        start = time.perf_counter()
        sample.keys((args.image_size, args.image_size))
        for i in range(0, len(sample), 64):
            sample.batch(i, min(i + 64, len(sample)), (args.image_size, args.image_size))
        decode_rate = len(sample) / (time.perf_counter() - start)
        print(f"decode + hash: {decode_rate:.0f} images/s on one core", flush=True)

        report = featurize(paths, work / "serial.zarr", **trunk)
        stores["serial"] = work / "serial.zarr"
        record("in-process (serial)", 1, report, 0.0)
        for name, workers, threads in (("LocalCluster 2 workers x 1 thread", 2, 1),
                                       ("LocalCluster 1 worker x 2 threads", 1, 2)):
            start = time.perf_counter()
            with LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                client.wait_for_workers(workers)
                startup = time.perf_counter() - start
                target = work / f"cluster-{workers}x{threads}.zarr"
                report = featurize(paths, target, client=client, **trunk)
            stores[name] = target
            record(name, workers * threads, report, startup)
        reference = np.asarray(FeatureStore.open(stores["serial"]).features[:])
        same = {name: bool(np.array_equal(np.asarray(FeatureStore.open(s).features[:]), reference))
                for name, s in stores.items()}

        # the store's write rate: the same bytes written again into a fresh Zarr array
        import zarr

        group = zarr.open_group(str(work / "write.zarr"), mode="w")
        array = group.create_array("features", shape=reference.shape, chunks=(args.chunk, reference.shape[1]),
                                   dtype="float32")
        start = time.perf_counter()
        for i in range(0, len(reference), args.chunk):
            array[i:i + args.chunk] = reference[i:i + args.chunk]
        write_s = time.perf_counter() - start
        write_rate = reference.nbytes / write_s / 1e6

        # the grid search of bench_grid on the BU train images' store rows: serial vs Dask
        train_paths, train_y = load_image_folder(BU_DATA / "train", return_paths=True)
        featurize(list(train_paths), work / "bu.zarr", labels=list(train_y), **{**trunk, "chunk": 64})
        bu = FeatureStore.open(work / "bu.zarr")
        X, y = bu.rows(), bu.labels
        clf = XrayCNNClassifier("xception", weights=weights, image_size=args.image_size, precision=args.precision,
                                epochs=args.grid_epochs, batch_size=10, random_state=0)
        cv = StratifiedKFold(3, shuffle=True, random_state=0)
        start = time.perf_counter()
        serial = GridSearchCV(clf, GRID, cv=cv).fit(X, y)
        serial_s = time.perf_counter() - start
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            client.wait_for_workers(2)
            start = time.perf_counter()
            with parallel_backend("dask"):
                parallel = GridSearchCV(clf, GRID, cv=cv, n_jobs=-1).fit(X, y)
            dask_s = time.perf_counter() - start
        equal = np.array_equal(serial.cv_results_["mean_test_score"], parallel.cv_results_["mean_test_score"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    table = markdown_table(["featurization", "task slots", "cluster start s", "wall s", "images/s",
                            "trunk s (sum)", "overhead s/chunk"], rows)
    grid_table = markdown_table(
        ["grid search (9 candidates x 3 folds, store rows)", "seconds", "best score", "scores equal to serial"],
        [["serial", f"{serial_s:.1f}", f"{serial.best_score_:.3f}", "-"],
         ["LocalCluster 2 x 1, joblib Dask backend, n_jobs=-1", f"{dask_s:.1f}", f"{parallel.best_score_:.3f}",
          str(equal)]])
    bytes_per_image = reference.shape[1] * 4
    notes = (f"{len(paths)} distinct images, chunks of {args.chunk} ({n_chunks} tasks), Xception (ImageNet) at "
             f"{args.image_size} px, {args.precision}, pooled features of {bytes_per_image:,} bytes per image. "
             f"Every store equal to the serial one byte for byte: {same}. Store write rate (the same features "
             f"into a fresh Zarr array, chunk by chunk): {write_rate:.0f} MB/s. Reading, decoding, resizing and "
             f"hashing the files alone (no trunk, one thread, 512 images): {decode_rate:.0f} images/s. Each worker "
             "process uses TensorFlow's default thread pools (as many threads as cores).\n\n" + grid_table)
    append_results("bench_distributed: featurization on a Dask LocalCluster vs in-process", table, notes=notes)


if __name__ == "__main__":
    main()

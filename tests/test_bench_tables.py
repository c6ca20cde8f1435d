"""The peers table of benchmarks/bench_peers.py: each peer's faster way marked, each row's share of the peak
measured in the round that gave its best rate."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
_environment = dict(os.environ)
peers_stacks = pytest.importorskip("peers_stacks")
for _key in set(os.environ) - set(_environment):  # benchmarks/_common sets a TensorFlow log level for the scripts
    del os.environ[_key]  # not for the other tests


def test_rows_mark_each_peers_faster_way_and_use_the_peak_of_the_best_round():
    results = {"xrayest:sutd_cnn": [{"img_per_s": 90.0}, {"img_per_s": 100.0}],
               "keras": [{"img_per_s": 20.0}, {"img_per_s": 25.0}],
               "keras:onednn": [{"img_per_s": 60.0}, {"img_per_s": 50.0}],
               "torch:0:channels_last": [{"img_per_s": 40.0}, {"img_per_s": 55.0}],
               "torch:0:contiguous": [{"img_per_s": 30.0}, {"img_per_s": 35.0}]}
    rates = {v: max(r["img_per_s"] for r in runs) for v, runs in results.items()}
    names = {v: v for v in results}
    rows = {row[0]: row for row in peers_stacks.rate_rows(results, rates, names, 1e9, [200.0, 100.0])}
    assert set(rows) == {"xrayest:sutd_cnn", "keras", "keras:onednn (faster plain Keras)",
                         "torch:0:channels_last (faster PyTorch)", "torch:0:contiguous"}
    # keras:onednn's best rate came in round 1 (peak 200), xrayest's in round 2 (peak 100)
    assert rows["keras:onednn (faster plain Keras)"][3:] == ["200", "30%", f"{100 / 60:.2f}"]
    assert rows["xrayest:sutd_cnn"][3:] == ["100", "100%", "1.00"]
    assert peers_stacks.best_of(rates, "torch") == "torch:0:channels_last"
    assert peers_stacks.best_of(rates, "nothing") is None

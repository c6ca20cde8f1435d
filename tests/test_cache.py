"""The feature cache: bounded, shared on disk, damage-safe, keyed by image content."""

import numpy as np
import pytest

from conftest import make_images
from xrayest.cache import FeatureCache
from xrayest.inputs import as_image_source


class TestFeatureCache:
    def test_lru_bound(self):
        cache = FeatureCache(max_bytes=3 * 400)
        for i in range(5):
            cache.put("cfg", str(i), np.zeros(100, np.float32))
        assert len(cache) == 3 and cache.nbytes <= 1200
        assert cache.get("cfg", "0") is None and cache.get("cfg", "4") is not None

    def test_disk_entries_are_shared_between_instances(self, tmp_path):
        FeatureCache(directory=tmp_path).put("cfg", "k", np.arange(3.0))
        np.testing.assert_array_equal(FeatureCache(directory=tmp_path).get("cfg", "k"), np.arange(3.0))
        assert not list(tmp_path.rglob("*.tmp"))

    def test_damaged_disk_entry_is_recomputed(self, tmp_path):
        cache = FeatureCache(directory=tmp_path)
        cache.put("cfg", "k", np.arange(3.0))
        next(tmp_path.rglob("*.npz")).write_bytes(b"garbage")
        assert FeatureCache(directory=tmp_path).get("cfg", "k") is None

    def test_cached_features_are_read_only(self):
        cache = FeatureCache()
        cache.put("cfg", "k", np.arange(3.0))
        with pytest.raises(ValueError):
            cache.get("cfg", "k")[0] = 5

    def test_remembers_the_feature_shape_of_each_configuration(self):
        cache = FeatureCache(max_bytes=10)  # too small to keep the entry: the shape is still known
        cache.put("cfg", "k", np.zeros((2, 3), np.float32))
        assert cache.get("cfg", "k") is None and cache.shape("cfg") == (2, 3) and cache.shape("other") is None


def test_image_keys_depend_on_content_only():
    X, _ = make_images(4)
    a = as_image_source(X).keys()
    b = as_image_source(X.copy()).keys()
    assert a == b and len(set(a)) == 4

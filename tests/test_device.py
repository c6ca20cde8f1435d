import numpy as np
import pytest

from conftest import tiny_classifier
from xrayest.device import available_devices, resolve_device

HAS_GPU = available_devices()["gpu"] > 0


def test_cpu_and_auto():
    assert resolve_device("cpu") == "cpu:0"
    assert resolve_device("auto") == ("gpu:0" if HAS_GPU else "cpu:0")


@pytest.mark.parametrize("bad", ["tpu", "gpu:x", "auto:1", 3, ""])
def test_malformed_device_strings(bad):
    with pytest.raises(ValueError, match="device"):
        resolve_device(bad)


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU")
def test_missing_gpu_is_an_error_listing_devices(binary_images):
    with pytest.raises(RuntimeError, match=r"asks for GPU 0, but TensorFlow found 1 CPU, 0 GPU"):
        resolve_device("gpu")
    X, y = binary_images
    with pytest.raises(RuntimeError, match="GPU"):
        tiny_classifier(device="gpu", epochs=1).fit(X, y)


def test_gpu_index_beyond_count():
    n = available_devices()["gpu"]
    with pytest.raises(RuntimeError, match=f"asks for GPU {n + 3}"):
        resolve_device(f"gpu:{n + 3}")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="no GPU on this machine")
def test_fit_on_gpu_matches_cpu_predictions(binary_images):
    X, y = binary_images
    clf = tiny_classifier(device="gpu", epochs=1).fit(X, y)
    gpu = clf.predict_proba(X)
    clf.set_params(device="cpu")
    np.testing.assert_allclose(clf.predict_proba(X), gpu, atol=1e-4)


def test_cpu_device_fits(binary_images):
    X, y = binary_images
    assert tiny_classifier(device="cpu", epochs=1).fit(X, y).predict(X).shape == (len(X),)


class TestPrecisionAuto:
    """precision="auto": the fastest precision the device runs natively, decided without the hardware."""

    @pytest.mark.parametrize("flags, expected", [({"avx2", "fma"}, "float32"),  # AVX2 only: bf16 emulated
                                                 ({"avx512f", "avx512_bf16"}, "bfloat16"),
                                                 ({"amx_bf16", "amx_tile"}, "bfloat16"),
                                                 (None, "float32")])  # flags unreadable
    def test_cpu_by_flags(self, flags, expected):
        from xrayest.device import choose_precision

        assert choose_precision("cpu", cpu_flags=flags) == expected

    @pytest.mark.parametrize("capability, expected", [((9, 0), "bfloat16"), ((8, 0), "bfloat16"),
                                                      ((8, 6), "bfloat16"), ((7, 5), "float16"),
                                                      ((7, 0), "float16"), ((6, 1), "float32"), (None, "float32")])
    def test_gpu_by_compute_capability(self, capability, expected):
        from xrayest.device import choose_precision

        assert choose_precision("gpu", compute_capability=capability) == expected

    @pytest.mark.parametrize("cap, kept", [
        (None, {"avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"}),
        ("AVX2", {"avx2"}),
        ("avx2_vnni", {"avx2", "avx_vnni"}),
        ("avx512_core", {"avx2", "avx_vnni", "avx512f"}),
        ("avx512_core_vnni", {"avx2", "avx_vnni", "avx512f", "avx512_vnni"}),
        ("AVX512_CORE_BF16", {"avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16"}),
        ("AVX512_CORE_AMX", {"avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"})])
    def test_onednn_isa_cap_removes_the_flags_out_of_its_reach(self, cap, kept):
        from xrayest.device import _capped

        flags = {"avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"}
        assert _capped(flags, cap) == kept

    def test_bfloat16_under_an_avx2_cap_is_refused_by_name(self, monkeypatch):
        # oneDNN capped at AVX2 has no bfloat16 convolution: the fit would fail deep in TensorFlow
        import numpy as np

        from xrayest import FeatureExtractor, XrayCNNClassifier

        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
        X, y = np.zeros((4, 32, 32), np.uint8), np.array([0, 1, 0, 1])
        for estimator in (XrayCNNClassifier("small_cnn", weights=None, image_size=32, precision="bfloat16"),
                          FeatureExtractor("small_cnn", weights=None, image_size=32, precision="bfloat16")):
            with pytest.raises(ValueError, match="precision='bfloat16' cannot run under ONEDNN_MAX_CPU_ISA=AVX2"):
                estimator.fit(X, y)
            assert not hasattr(estimator, "precision_")
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # Eigen's kernels: emulated, not refused
        from xrayest.device import check_cpu_precision

        with pytest.warns(RuntimeWarning, match="emulated"):
            check_cpu_precision("bfloat16", "cpu")

    def test_auto_is_float32_under_an_avx2_cap_on_any_host(self, monkeypatch):
        # ONEDNN_MAX_CPU_ISA=AVX2 leaves TensorFlow no bfloat16 matmul (oneDNN refuses it): auto must not pick it
        from xrayest.device import cpu_flags, resolve_precision

        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
        assert not (cpu_flags() or set()) & {"avx512_bf16", "amx_bf16"}
        assert resolve_precision("auto", "cpu") == "float32"

    def test_resolve_reads_this_cpu_and_an_explicit_precision_wins(self, monkeypatch):
        import xrayest.device as device

        monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2"})
        assert device.resolve_precision("auto", "cpu") == "float32"
        monkeypatch.setattr(device, "cpu_flags", lambda: {"avx512_bf16"})
        assert device.resolve_precision("auto", "cpu") == "bfloat16"
        assert device.resolve_precision("float32", "cpu") == "float32"
        assert device.resolve_precision("bfloat16", "cpu") == "bfloat16"

    def test_resolve_on_a_gpu_reads_its_compute_capability(self, monkeypatch):
        import xrayest.device as device

        monkeypatch.setattr(device, "resolve_device", lambda d: "gpu:1")
        seen = []
        monkeypatch.setattr(device, "_gpu_compute_capability", lambda i: seen.append(i) or (7, 5))
        assert device.resolve_precision("auto", "gpu:1") == "float16" and seen == [1]

    def test_fit_records_the_choice_saves_and_loads_it(self, monkeypatch, tmp_path):
        import warnings

        import xrayest
        import xrayest.device as device
        from xrayest import FeatureExtractor, XrayCNNClassifier

        X = np.random.default_rng(0).integers(0, 255, (8, 32, 32), dtype=np.uint8)
        y = [0, 1] * 4
        monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2", "fma"})
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # auto never picks an emulated precision: no warning
            clf = XrayCNNClassifier("small_cnn", weights=None, image_size=32, epochs=1, random_state=0).fit(X, y)
        assert clf.precision == "auto" and clf.precision_ == "float32"
        assert xrayest.load(clf.save(tmp_path / "m.keras")).precision_ == "float32"
        monkeypatch.setattr(device, "cpu_flags", lambda: {"avx512_bf16"})
        clf.fit(X, y)
        assert clf.precision_ == "bfloat16" and xrayest.load(clf.save(tmp_path / "m.keras")).precision_ == "bfloat16"
        extractor = FeatureExtractor("small_cnn", weights=None, image_size=32, random_state=0).fit(X)
        assert extractor.precision_ == "bfloat16"
        monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2"})
        with pytest.warns(RuntimeWarning, match="emulated"):  # an explicit emulated precision still warns
            XrayCNNClassifier("small_cnn", weights=None, image_size=32, epochs=1, precision="bfloat16").fit(X, y)


class TestOneDNNKernels:
    """TensorFlow leaves its oneDNN kernels off by default on AVX2-only CPUs; xrayest turns them on there."""

    @pytest.mark.parametrize("flags, off", [({"avx2", "fma"}, True), ({"avx2", "avx512f"}, True),
                                            ({"avx2", "avx512_vnni"}, False), ({"avx2", "avx_vnni"}, False),
                                            ({"avx2", "amx_tile"}, False), ({"asimd"}, False), (None, False)])
    def test_tensorflows_default_by_flags(self, flags, off):
        from xrayest.device import onednn_off_by_default

        assert onednn_off_by_default(flags) is off

    def test_set_only_where_off_unset_and_before_tensorflow(self, monkeypatch):
        import warnings

        from xrayest import device
        from xrayest.device import use_onednn_kernels

        monkeypatch.setattr(device, "_SLOW_KERNELS", False)
        env = {}
        assert use_onednn_kernels(env, {"avx2"}, tensorflow_loaded=False) and env == {"TF_ENABLE_ONEDNN_OPTS": "1"}
        env = {"TF_ENABLE_ONEDNN_OPTS": "0"}  # the user's choice stands
        assert not use_onednn_kernels(env, {"avx2"}, tensorflow_loaded=False) and env["TF_ENABLE_ONEDNN_OPTS"] == "0"
        env = {}  # TensorFlow's default is already on
        assert not use_onednn_kernels(env, {"avx2", "avx512_bf16"}, tensorflow_loaded=False) and env == {}
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # too late to set: nothing said at import, noted for the first fit
            assert not use_onednn_kernels(env, {"avx2", "avx512_vnni"}, tensorflow_loaded=True)
            assert not device._SLOW_KERNELS
            assert not use_onednn_kernels(env, {"avx2"}, tensorflow_loaded=True)
        assert env == {} and device._SLOW_KERNELS

    def test_tensorflow_imported_first_the_first_cpu_fit_says_what_it_costs_once(self, monkeypatch):
        import warnings

        from xrayest import XrayCNNClassifier, make_synthetic_xrays
        from xrayest import device

        monkeypatch.setattr(device, "_SLOW_KERNELS", False)
        device.use_onednn_kernels({}, {"avx2", "fma"}, tensorflow_loaded=True)  # an AVX2-only CPU, keras first
        X, y = make_synthetic_xrays(n_samples=8, image_size=32, random_state=0)
        clf = XrayCNNClassifier("small_cnn", weights=None, image_size=32, epochs=1, device="cpu")
        with pytest.warns(RuntimeWarning, match="about half the speed") as caught:
            clf.fit(X, y)
        (said,) = [w for w in caught if "TF_ENABLE_ONEDNN_OPTS=1" in str(w.message)]  # once, with the fix
        assert "import xrayest" in str(said.message) and said.filename == __file__  # the user's line
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            clf.fit(X, y)
            clf.predict(X)

    def test_startup_hook_sets_the_variable_only_where_off_and_unset(self):
        import _xrayest_startup as hook

        env = {}
        assert hook.set_onednn_opts(env, {"avx2", "fma"}) and env == {"TF_ENABLE_ONEDNN_OPTS": "1"}
        env = {"TF_ENABLE_ONEDNN_OPTS": "0"}
        assert not hook.set_onednn_opts(env, {"avx2", "fma"}) and env == {"TF_ENABLE_ONEDNN_OPTS": "0"}
        env = {}
        assert not hook.set_onednn_opts(env, {"avx2", "avx512_bf16"}) and not hook.set_onednn_opts(env, None)
        assert env == {}
        assert not hook.set_onednn_opts(object(), {"avx2"})  # never raises at start-up

    def test_startup_hook_runs_when_python_starts(self):
        # A regular install puts xrayest-startup.pth into site-packages; Python's start-up runs it before any
        # import of the script, so on an AVX2-only CPU keras-first scripts get oneDNN too.
        import subprocess
        import sys
        import sysconfig
        from pathlib import Path

        if not (Path(sysconfig.get_paths()["purelib"]) / "xrayest-startup.pth").is_file():
            pytest.skip("xrayest is installed editable (pip install -e): the start-up hook comes with a regular "
                        "install (pip install .)")
        code = "import sys; print('_xrayest_startup' in sys.modules, 'xrayest' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.split() == ["True", "False"]  # the hook ran and did not load the package

    def test_after_import_tensorflows_onednn_kernels_are_on(self):
        # On any x86 CPU with AVX2: by TensorFlow's own default (AVX512-VNNI, AVX512-BF16, AVX-VNNI, AMX) or, on an
        # AVX2-only CPU, because import xrayest set TF_ENABLE_ONEDNN_OPTS=1; a value the user set is kept
        import os
        import subprocess
        import sys

        from xrayest.device import cpu_flags, onednn_off_by_default

        flags = cpu_flags(capped=False)
        if "avx2" not in (flags or set()):
            pytest.skip("not an x86 CPU with AVX2")
        env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
        env["TF_CPP_MIN_LOG_LEVEL"] = "0"  # TensorFlow logs whether its oneDNN kernels are on
        code = "import os, xrayest; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS')); import tensorflow"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        assert out.stdout.split() == (["1"] if onednn_off_by_default(flags) else ["None"])
        assert "oneDNN custom operations are on" in out.stderr
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**env, "TF_ENABLE_ONEDNN_OPTS": "0"})
        assert out.stdout.split() == ["0"] and "oneDNN custom operations are on" not in out.stderr

"""DICOM input: files written here with pydicom from real (or synthetic) X-rays, and pydicom's own samples."""

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", reason="the [dicom] extra (pydicom) is not installed")

from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataset import FileMetaDataset  # noqa: E402
from pydicom.uid import (ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless,  # noqa: E402
                         SecondaryCaptureImageStorage, generate_uid)

from xrayest.dicom import is_dicom, read_dicom  # noqa: E402
from xrayest.inputs import read_image  # noqa: E402


def write_dicom(path, stored, *, bits=16, photometric="MONOCHROME2", window=None, syntax=ExplicitVRLittleEndian,
                rescale=None, suffix_free=False):
    """A single-frame grayscale DICOM file holding ``stored`` (uint8/uint16) with ``bits`` bits stored."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", "P1"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = 8 if stored.dtype == np.uint8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, np.ascontiguousarray(stored))
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def xray():
    """An 8-bit grayscale X-ray: a real BU image when ../shared is there, else a synthetic one."""
    from conftest import SHARED

    files = sorted((SHARED / "data" / "bu_cs542" / "train" / "normal").glob("*")) if SHARED.exists() else []
    if files:
        image = read_image(files[0], (96, 80))[..., 0]
    else:
        from xrayest.datasets import make_synthetic_xrays

        image = make_synthetic_xrays(n_samples=2, image_size=96, random_state=0)[0][0][:, :80].astype(float)
    return np.rint(image).astype(np.uint8)


def test_a_dicom_written_from_a_png_reads_back_to_the_png_pixels(tmp_path, xray):
    from PIL import Image

    png = tmp_path / "x.png"
    Image.fromarray(xray, mode="L").save(png)
    dcm = write_dicom(tmp_path / "x.dcm", xray, bits=8)
    np.testing.assert_array_equal(read_image(dcm), read_image(png))
    # resized: PIL resizes 8-bit images in fixed point, DICOM ones in float; they agree to one grey level
    np.testing.assert_allclose(read_image(dcm, (40, 30)), read_image(png, (40, 30)), atol=1.0)


@pytest.mark.parametrize("bits", [12, 16])
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless],
                         ids=["uncompressed", "rle", "jpeg2000"])
def test_bit_depth_and_compression(tmp_path, xray, bits, syntax):
    """12- and 16-bit stored values are scaled by BitsStored, whatever the container or compression."""
    peak = 2**bits - 1
    stored = np.rint(xray.astype(np.float64) * peak / 255).astype(np.uint16)
    image = read_dicom(write_dicom(tmp_path / "x.dcm", stored, bits=bits, syntax=syntax))
    np.testing.assert_allclose(image, xray, atol=0.51)


def test_monochrome1_is_inverted(tmp_path, xray):
    stored = np.rint(xray.astype(np.float64) * 4095 / 255).astype(np.uint16)
    mono2 = read_dicom(write_dicom(tmp_path / "a.dcm", stored, bits=12))
    mono1 = read_dicom(write_dicom(tmp_path / "b.dcm", 4095 - stored, bits=12, photometric="MONOCHROME1"))
    np.testing.assert_allclose(mono1, mono2, atol=1e-3)


def test_voi_window_is_applied_as_viewers_do(tmp_path):
    """Centre 2048, width 1024 on 12 bits (PS3.3 C.11.2.1.2.1): <= 1536 black, > 2559 white, linear between."""
    stored = np.array([[0, 1000, 1536, 2048, 2560, 3000, 4095, 1537]], np.uint16)
    image = read_dicom(write_dicom(tmp_path / "w.dcm", stored, bits=12, window=(2048, 1024)))
    assert image[0, 0] == image[0, 1] == image[0, 2] == 0 and image[0, 4] == image[0, 5] == image[0, 6] == 255
    assert 0 < image[0, 7] < 1
    np.testing.assert_allclose(image[0, 3], ((2048 - 2047.5) / 1023 + 0.5) * 255, atol=1e-3)
    without = read_dicom(write_dicom(tmp_path / "n.dcm", stored, bits=12))
    np.testing.assert_allclose(without[0, 3], 2048 * 255 / 4095, atol=1e-3)


def test_modality_rescale_then_range(tmp_path):
    """Rescale slope/intercept move the values and their range alike: the displayed image is unchanged."""
    stored = np.array([[0, 100, 4095]], np.uint16)
    plain = read_dicom(write_dicom(tmp_path / "a.dcm", stored, bits=12))
    rescaled = read_dicom(write_dicom(tmp_path / "b.dcm", stored, bits=12, rescale=(2.0, -1024.0)))
    np.testing.assert_allclose(rescaled, plain, atol=1e-3)


def test_detected_by_preamble_and_used_everywhere_paths_are(tmp_path, xray):
    """A DICOM file without the .dcm suffix is still read; the estimators and load_image_folder take .dcm paths."""
    from conftest import tiny_classifier

    from xrayest import load_image_folder

    odd = write_dicom(tmp_path / "IM0001", xray, bits=8)
    assert is_dicom(odd) and not is_dicom(tmp_path / "missing.png")
    np.testing.assert_array_equal(read_image(odd)[..., 0], xray)
    for label, shift in [("a", 0), ("b", 60)]:
        (tmp_path / "set" / label).mkdir(parents=True)
        for i in range(3):
            write_dicom(tmp_path / "set" / label / f"{i}.dcm", np.clip(xray.astype(int) + shift + i, 0, 255)
                        .astype(np.uint8), bits=8)
    paths, y = load_image_folder(tmp_path / "set", return_paths=True)
    assert len(paths) == 6 and all(p.endswith(".dcm") for p in paths)
    X, _ = load_image_folder(tmp_path / "set", image_size=32)
    assert X.shape == (6, 32, 32, 3)
    clf = tiny_classifier(epochs=1).fit(list(paths), y)
    np.testing.assert_allclose(clf.predict_proba(list(paths)), clf.predict_proba(X), atol=2e-2)


def test_pydicom_samples_compressed_alike():
    """pydicom's MR sample, uncompressed and in three lossless syntaxes, reads to the same image."""
    reference = read_dicom(get_testdata_file("MR_small.dcm"))
    assert reference.shape == (64, 64) and reference.max() > reference.min()
    for name in ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]:
        np.testing.assert_array_equal(read_dicom(get_testdata_file(name)), reference, err_msg=name)


@pytest.mark.parametrize("name, message", [
    ("rtplan.dcm", "holds no image"),
    ("rtdose.dcm", "frames"),
    ("SC_rgb_rle.dcm", "grayscale"),
])
def test_non_images_multi_frame_and_colour_refused_naming_the_file(name, message):
    path = get_testdata_file(name)
    with pytest.raises(ValueError, match=message) as info:
        read_image(path)
    assert name in str(info.value)


def test_not_dicom_and_truncated(tmp_path, xray):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not a dicom file at all")
    with pytest.raises(ValueError, match="bad.dcm"):
        read_image(bad)
    good = write_dicom(tmp_path / "good.dcm", xray, bits=8).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="cut.dcm"):
        read_image(cut)


def test_pydicom_errors_name_the_file(tmp_path, xray):
    zero = write_dicom(tmp_path / "zero_width.dcm", xray.astype(np.uint16), bits=12, window=(100, 0))
    with pytest.raises(ValueError, match=r"DICOM file .*zero_width.dcm has Window Width 0"):
        read_image(zero)
    wrong = tmp_path / "wrong_size.dcm"
    ds = pydicom.dcmread(write_dicom(wrong, xray, bits=8))
    ds.Rows = ds.Rows + 7  # pixel data no longer Rows x Columns
    ds.save_as(wrong)
    with pytest.raises(ValueError, match=r"cannot decode the pixel data of DICOM file .*wrong_size.dcm"):
        read_image(wrong)
    for rows in (xray.shape[0] // 2, 1):  # more pixel bytes than Rows x Columns: pydicom reads extra frames
        extra = tmp_path / f"extra_{rows}.dcm"
        ds = pydicom.dcmread(write_dicom(extra, xray, bits=8))
        ds.Rows = rows
        ds.save_as(extra)
        with pytest.raises(ValueError, match=rf"DICOM file .*extra_{rows}.dcm describes a {rows}x\d+ image but "
                                             r"its pixel data \(\d+ bytes\) hold \d+ such images"):
            read_image(extra)
    good = write_dicom(tmp_path / "good.dcm", xray, bits=8).read_bytes()
    cut = tmp_path / "cut_at_pixels.dcm"
    cut.write_bytes(good[: good.index(b"\xe0\x7f\x10\x00")])  # cut right before the Pixel Data element
    with pytest.raises(ValueError, match=r"cut_at_pixels.dcm describes a 96x80 image but holds no pixel data"):
        read_image(cut)


def test_voi_lut_sequence_is_applied(tmp_path):
    """A VOI LUT Sequence (here 256 entries of 12 bits, a curve) maps stored values through the table."""
    from pydicom.dataset import Dataset

    stored = np.arange(256, dtype=np.uint16).reshape(16, 16)
    path = write_dicom(tmp_path / "lut.dcm", stored, bits=8)
    ds = pydicom.dcmread(path)
    table = np.rint(4095 * (np.arange(256) / 255) ** 0.5).astype(np.uint16)
    item = Dataset()
    item.add_new(0x00283002, "US", [256, 0, 12])  # LUT Descriptor: entries, first stored value, bits
    item.add_new(0x00283006, "US", table.tolist())  # LUT Data
    ds.VOILUTSequence = [item]
    ds.save_as(path)
    image = read_dicom(path)
    np.testing.assert_allclose(image.ravel(), table.astype(float) * 255 / 4095, atol=1e-3)

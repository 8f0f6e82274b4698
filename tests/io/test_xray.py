"""X-ray loading: every format, photometric handling, bit depths, geometry, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from gazerad.coords import point_to_index
from gazerad.errors import MissingDecoderError, XRayReadError
from gazerad.io.dicom import write_dicom_xray
from gazerad.io.xray import LoadXRay, LoadXRayd, read_xray

# An asymmetric image: 3 rows x 5 columns with distinct values, so any transposition or flip
# changes what is read at (row 1, col 3).
ASYM = np.array(
    [[10, 20, 30, 40, 50], [60, 70, 80, 4000, 100], [110, 120, 130, 140, 150]],
    dtype=np.uint16,
)


def _assert_asym(img: np.ndarray, scale: float = 1.0, offset: float = 0.0) -> None:
    assert img.shape == (3, 5)
    np.testing.assert_allclose(img, ASYM * scale + offset, rtol=0, atol=1e-3)
    assert np.unravel_index(np.argmax(img), img.shape) == (1, 3)


def test_png16_roundtrip_and_geometry(tmp_path):
    p = tmp_path / "a.png"
    Image.fromarray(ASYM).save(p)
    img, meta = read_xray(p)
    assert img.dtype == np.float32
    _assert_asym(img)
    assert meta["bits_stored"] == 16 and meta["format"] == "png"
    assert (meta["original_height"], meta["original_width"]) == (3, 5)
    assert meta["photometric"] == "MONOCHROME2" and meta["filename_or_obj"] == str(p)
    # the documented convention: point (x=3.5, y=1.5) is the pixel at row 1, col 3
    r, c = point_to_index(np.array([[3.5, 1.5]]))[0]
    assert img[r, c] == 4000


def test_png8_and_rgb_png(tmp_path):
    a8 = (ASYM // 40).astype(np.uint8)
    Image.fromarray(a8).save(tmp_path / "g.png")
    img, meta = read_xray(tmp_path / "g.png")
    np.testing.assert_array_equal(img, a8)
    assert meta["bits_stored"] == 8
    Image.fromarray(np.stack([a8] * 3, -1)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_xray(tmp_path / "rgb.png")[0], a8)


def test_jpeg8_asymmetric(tmp_path):
    big = np.zeros((48, 80), np.uint8)
    big[8:16, 56:72] = 250  # bright block at rows 8-15, cols 56-71
    Image.fromarray(big).save(tmp_path / "a.jpg", quality=95)
    img, meta = read_xray(tmp_path / "a.jpg")
    assert img.shape == (48, 80) and meta["format"] == "jpeg"
    assert img[12, 64] > 200 and img[64 % 48, 12] < 50 and img[40, 10] < 50


def test_transforms_in_compose(tmp_path):
    from monai.data import MetaTensor
    from monai.transforms import Compose, ScaleIntensityd

    p = tmp_path / "a.png"
    Image.fromarray(ASYM).save(p)
    t = LoadXRay()(p)
    assert isinstance(t, MetaTensor) and tuple(t.shape) == (1, 3, 5)
    assert float(t[0, 1, 3]) == 4000 and t.meta["spatial_shape"] == (3, 5)
    d = Compose([LoadXRayd(keys="image"), ScaleIntensityd(keys="image")])({"image": str(p), "label": 1})
    assert tuple(d["image"].shape) == (1, 3, 5) and d["label"] == 1
    assert float(d["image"].max()) == pytest.approx(1.0) and float(d["image"][0, 1, 3]) == pytest.approx(1.0)
    with pytest.raises(KeyError):
        LoadXRayd(keys="missing")({"image": str(p)})


def test_a_monai_dataloader_batches_any_mix_of_formats(tmp_path):
    """The transforms' metadata had None (spacing, VOI of a PNG) and format-dependent keys:
    MONAI's collate refused every batch."""
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose, ScaleIntensityd

    Image.fromarray(ASYM).save(tmp_path / "a.png")
    write_dicom_xray(tmp_path / "b.dcm", ASYM, spacing=(0.2, 0.3))
    files = [{"image": str(tmp_path / n)} for n in ("a.png", "b.dcm")]
    batch = next(iter(DataLoader(Dataset(files, Compose([LoadXRayd(keys="image"), ScaleIntensityd(keys="image")])), batch_size=2)))
    assert tuple(batch["image"].shape) == (2, 1, 3, 5)
    sp = batch["image"].meta["spacing"]
    assert np.isnan(float(sp[0][0])) and float(sp[0][1]) == pytest.approx(0.2) and float(sp[1][1]) == pytest.approx(0.3)
    assert list(batch["image"].meta["voi_applied"]) == ["none", "none"]
    assert read_xray(tmp_path / "a.png")[1]["spacing"] is None  # read_xray's own dict keeps None


@pytest.mark.parametrize("bits", [10, 12, 16])
def test_dicom_monochrome2_bits(tmp_path, bits):
    stored = (ASYM.astype(np.int64) * (2**bits - 1) // 4000).astype(np.uint16)
    p = tmp_path / "m2.dcm"
    write_dicom_xray(p, stored, bits_stored=bits, spacing=(0.15, 0.2))
    img, meta = read_xray(p)
    np.testing.assert_array_equal(img, stored)
    assert meta["bits_stored"] == bits and meta["photometric"] == "MONOCHROME2"
    assert meta["spacing"] == (0.15, 0.2) and meta["modality"] == "DX"


def test_dicom_monochrome1_is_inverted_so_bone_is_bright(tmp_path):
    stored = (4095 - ASYM).astype(np.uint16)  # on disk dense = dark (MONOCHROME1, 12 bit)
    p = tmp_path / "m1.dcm"
    write_dicom_xray(p, stored, photometric="MONOCHROME1", bits_stored=12, modality="CR")
    img, meta = read_xray(p)
    _assert_asym(img)  # inverted over the 12-bit range: back to the original values
    assert meta["photometric"] == "MONOCHROME1"


def test_dicom_rescale_slope_intercept(tmp_path):
    p = tmp_path / "r.dcm"
    write_dicom_xray(p, ASYM, bits_stored=12, rescale=(2.0, -100.0))
    img, _ = read_xray(p)
    _assert_asym(img, scale=2.0, offset=-100.0)


def test_dicom_monochrome1_with_rescale_inverts_over_modality_range(tmp_path):
    p = tmp_path / "r1.dcm"
    write_dicom_xray(p, (4095 - ASYM).astype(np.uint16), photometric="MONOCHROME1", bits_stored=12, rescale=(0.5, 10))
    img, _ = read_xray(p)
    # modality range [10, 2057.5]; value v -> 10 + 2057.5 - (0.5 * (4095 - a) + 10) = 0.5 a + 10
    _assert_asym(img, scale=0.5, offset=10.0)


def test_dicom_window_and_voi(tmp_path):
    p = tmp_path / "w.dcm"
    write_dicom_xray(p, ASYM, bits_stored=12, window=(100.0, 100.0))
    raw, m0 = read_xray(p)
    assert m0["voi_applied"] is None and raw.max() == 4000
    win, m1 = read_xray(p, window=(100.0, 100.0))
    assert m1["voi_applied"] == "window"
    assert win.min() == 0.0 and win.max() == 1.0 and win[1, 4] == pytest.approx(0.5)  # 100 in [50, 150]
    lut_img, m2 = read_xray(p, voi="lut")
    assert m2["voi_applied"] == "lut"
    assert lut_img[0, 0] == 0 and lut_img[1, 3] == pytest.approx(4095)  # pydicom maps the window to the 12-bit range
    # explicit VOI LUT sequence
    lut = (np.arange(4096) // 16).astype(np.uint16)
    write_dicom_xray(tmp_path / "lut.dcm", ASYM, bits_stored=12, voi_lut=lut)
    img, _ = read_xray(tmp_path / "lut.dcm", voi="lut")
    np.testing.assert_array_equal(img, ASYM // 16)


def test_dicom_rle_compressed_roundtrip(tmp_path):
    big = np.tile(ASYM, (8, 8))
    p = tmp_path / "rle.dcm"
    write_dicom_xray(p, big, bits_stored=12, compress_rle=True)
    img, meta = read_xray(p)
    assert meta["transfer_syntax"] == "1.2.840.10008.1.2.5"
    np.testing.assert_array_equal(img, big)


def _jpeg2000_dicom(tmp_path, arr):
    openjpeg = pytest.importorskip("openjpeg")
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    p = tmp_path / "plain.dcm"
    write_dicom_xray(p, arr, bits_stored=12)
    ds = pydicom.dcmread(p)
    ds.PixelData = encapsulate([openjpeg.encode(arr, bits_stored=12)])
    ds["PixelData"].is_undefined_length = True
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    out = tmp_path / "j2k.dcm"
    ds.save_as(out, write_like_original=False)
    return out


def test_dicom_jpeg2000_decodes_with_pylibjpeg(tmp_path):
    pytest.importorskip("pylibjpeg")
    arr = (np.arange(64 * 48).reshape(64, 48) % 4096).astype(np.uint16)
    arr[5, 40] = 4095
    img, meta = read_xray(_jpeg2000_dicom(tmp_path, arr))
    np.testing.assert_array_equal(img, arr)
    assert meta["transfer_syntax"] == "1.2.840.10008.1.2.4.90"


def test_dicom_compressed_without_decoder_names_the_missing_package(tmp_path, monkeypatch):
    import pydicom.config

    arr = (np.arange(64 * 48).reshape(64, 48) % 4096).astype(np.uint16)
    path = _jpeg2000_dicom(tmp_path, arr)
    # as on a machine without pylibjpeg/gdcm: only pydicom's built-in handlers
    from pydicom.pixel_data_handlers import numpy_handler, rle_handler

    monkeypatch.setattr(pydicom.config, "pixel_data_handlers", [numpy_handler, rle_handler])
    with pytest.raises(MissingDecoderError) as ei:
        read_xray(path)
    msg = str(ei.value)
    assert str(path) in msg and "JPEG 2000" in msg and "pylibjpeg-openjpeg" in msg and "python-gdcm" in msg


def test_nifti_and_nrrd_2d(tmp_path):
    import nibabel as nib

    img = sitk.GetImageFromArray(ASYM.astype(np.float32))  # sitk array order is [row, col]
    img.SetSpacing((0.2, 0.15))  # (x, y)
    for name in ("a.nii.gz", "a.nrrd"):
        sitk.WriteImage(img, str(tmp_path / name))
        out, meta = read_xray(tmp_path / name)
        _assert_asym(out)
        assert meta["spacing"] == pytest.approx((0.15, 0.2)) and meta["format"] in ("nifti", "nrrd")
    # nibabel stores data[i, j] with i = x (column): the loader must not transpose it wrongly
    nib.save(nib.Nifti1Image(ASYM.T.astype(np.float32), np.eye(4)), str(tmp_path / "nib.nii"))
    _assert_asym(read_xray(tmp_path / "nib.nii")[0])
    # a 3-D volume is not a radiograph
    vol = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.float32))
    sitk.WriteImage(vol, str(tmp_path / "vol.nrrd"))
    with pytest.raises(XRayReadError, match="2-D"):
        read_xray(tmp_path / "vol.nrrd")


def test_dicom_without_suffix_is_sniffed(tmp_path):
    p = tmp_path / "IM0001"
    write_dicom_xray(tmp_path / "x.dcm", ASYM, bits_stored=12)
    (tmp_path / "x.dcm").rename(p)
    _assert_asym(read_xray(p)[0])


# ------------------------------------------------------------------------- bad input


def _expect_error(path, *words, exc=XRayReadError):
    with pytest.raises(exc) as ei:
        read_xray(path)
    msg = str(ei.value)
    assert str(path) in msg, msg
    for w in words:
        assert w.lower() in msg.lower(), msg
    return msg


def test_bad_inputs_name_file_and_problem(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    _expect_error(empty, "empty")

    good = tmp_path / "good.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 65535).astype(np.uint16)).save(good)
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _expect_error(trunc, "truncated")

    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg at all" * 10)
    _expect_error(garbage, "not a readable")

    _expect_error(tmp_path / "nope.png", "does not exist")
    _expect_error(tmp_path / "image.tiff".replace("tiff", "bmp"), "does not exist")
    unknown = tmp_path / "image.bmp"
    unknown.write_bytes(b"BM" + b"\0" * 100)
    _expect_error(unknown, "unknown image file type", ".bmp")

    notdcm = tmp_path / "bad.dcm"
    notdcm.write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 4)
    _expect_error(notdcm, "dicom")

    plain = tmp_path / "plain.dcm"
    write_dicom_xray(plain, np.tile(ASYM, (10, 10)), bits_stored=12)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(plain.read_bytes()[:-200])
    _expect_error(cut, "pixel data")


def test_unsupported_photometric_and_multiframe(tmp_path):
    import pydicom

    p = tmp_path / "x.dcm"
    write_dicom_xray(p, ASYM, bits_stored=12)
    ds = pydicom.dcmread(p)
    ds.PhotometricInterpretation = "RGB"
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = np.zeros((3, 5, 3), np.uint8).tobytes()
    rgb = tmp_path / "rgb.dcm"
    ds.save_as(rgb)
    _expect_error(rgb, "unsupported photometric interpretation", "RGB")

    ds = pydicom.dcmread(p)
    ds.NumberOfFrames = 2
    ds.PixelData = np.concatenate([ASYM, ASYM]).tobytes()
    mf = tmp_path / "mf.dcm"
    ds.save_as(mf)
    _expect_error(mf, "multi-frame")

    ds = pydicom.dcmread(p)
    del ds.PixelData
    nopix = tmp_path / "nopix.dcm"
    ds.save_as(nopix)
    _expect_error(nopix, "no PixelData")


def _png_declaring(tmp: Path, w: int, h: int) -> Path:
    """A valid 1 x 1 PNG whose header (CRC fixed) declares ``w x h`` pixels."""
    import io
    import struct
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(buf, format="PNG")
    png = bytearray(buf.getvalue())
    png[16:24] = struct.pack(">II", w, h)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    out = tmp / f"declares_{w}x{h}.png"
    out.write_bytes(bytes(png))
    return out


@pytest.mark.parametrize("w, h", [(9000, 9000), (100_000, 100_000)])
def test_a_header_declaring_too_many_pixels_is_refused_before_decoding(tmp_path: Path, w: int, h: int) -> None:
    with pytest.raises(XRayReadError, match="too many pixels|over the limit") as e:
        read_xray(_png_declaring(tmp_path, w, h))
    assert f"declares_{w}x{h}.png" in str(e.value)


def test_nifti_declaring_a_huge_image_or_missing_data_is_refused(tmp_path: Path) -> None:
    import gzip

    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape((30000, 30000))
    hdr.set_data_dtype(np.uint8)
    (tmp_path / "huge.nii").write_bytes(hdr.binaryblock + b"\0" * 14)  # 362 bytes declaring 900 Mpx
    with pytest.raises(XRayReadError, match="30000 x 30000 = 900000000 pixels, over the limit"):
        read_xray(tmp_path / "huge.nii")
    nib.save(nib.Nifti1Image(np.ones((64, 64), np.float32), np.eye(4)), str(tmp_path / "ok.nii"))
    raw = (tmp_path / "ok.nii").read_bytes()
    (tmp_path / "short.nii").write_bytes(raw[:-2000])  # ITK alone would fill the rest with zeros
    (tmp_path / "short.nii.gz").write_bytes(gzip.compress(raw[:-3000]))
    for name in ("short.nii", "short.nii.gz"):
        with pytest.raises(XRayReadError, match="NIfTI data block is truncated"):
            read_xray(tmp_path / name)
    assert read_xray(tmp_path / "ok.nii")[0].shape == (64, 64)


def test_dicom_declaring_too_many_pixels_is_refused(tmp_path: Path) -> None:
    import pydicom

    src = tmp_path / "ok.dcm"
    write_dicom_xray(src, (np.random.default_rng(0).random((32, 32)) * 4095).astype(np.uint16))
    ds = pydicom.dcmread(src)
    ds.Rows, ds.Columns = 20000, 20000
    ds.save_as(tmp_path / "huge.dcm")
    with pytest.raises(XRayReadError, match="20000 x 20000 = 400000000 pixels"):
        read_xray(tmp_path / "huge.dcm")

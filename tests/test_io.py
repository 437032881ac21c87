"""Tests for deblurcli.io: exact round trips, bit depth, alpha, EXIF orientation, ICC, failures."""

from __future__ import annotations

import os
import struct
import warnings
import zlib

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage
from PIL import ImageCms, ImageOps

from deblurcli import io as dio
from deblurcli.errors import ImageFormatError, ImageTooLargeError, UnsupportedImageError

RNG = np.random.default_rng(0)
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def rand(shape, dtype=np.uint8):
    return RNG.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


def cv2_write(path, rgb):  # independent reference writer, RGB(A) in
    if rgb.ndim == 3:
        rgb = rgb[..., [2, 1, 0, 3][: rgb.shape[2]]]
    path.write_bytes(cv2.imencode(path.suffix, rgb)[1].tobytes())


def cv2_read(path):
    arr = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    return arr[..., [2, 1, 0, 3][: arr.shape[2]]] if arr.ndim == 3 else arr


def scaled(img):  # pixels back in the original integer range
    return np.rint(img.pixels * np.iinfo(img.dtype).max).astype(img.dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_png_round_trip_is_exact(tmp_path, dtype, channels):
    src = rand((5, 7, channels), dtype)
    cv2_write(tmp_path / "in.png", src if channels > 1 else src[..., 0])
    img = dio.read_image(tmp_path / "in.png")
    assert (img.dtype, img.format, img.pixels.dtype) == (np.dtype(dtype), "png", np.float32)
    assert np.array_equal(scaled(img), src[..., :3])
    if channels == 4:
        assert img.alpha.dtype == dtype and np.array_equal(img.alpha, src[..., 3])
    dio.write_image(tmp_path / "out.png", img)
    assert np.array_equal(cv2_read(tmp_path / "out.png").reshape(src.shape), src)


def test_dark_16bit_stays_16bit(tmp_path):
    src = RNG.integers(0, 200, (4, 6, 3)).astype(np.uint16)
    cv2_write(tmp_path / "dark.png", src)
    img = dio.read_image(tmp_path / "dark.png")
    assert img.dtype == np.uint16 and img.pixels.max() < 0.01
    dio.write_image(tmp_path / "out.png", img)
    out = cv2_read(tmp_path / "out.png")
    assert out.dtype == np.uint16 and np.array_equal(out, src)


def test_gray_alpha_png(tmp_path):
    src = rand((4, 6, 2))
    PILImage.fromarray(src, "LA").save(tmp_path / "la.png")
    img = dio.read_image(tmp_path / "la.png")
    assert img.channels == 1 and np.array_equal(scaled(img)[..., 0], src[..., 0])
    assert np.array_equal(img.alpha, src[..., 1])
    dio.write_image(tmp_path / "out.tif", img)  # TIFF keeps gray+alpha as two samples
    back = dio.read_image(tmp_path / "out.tif")
    assert back.channels == 1 and np.array_equal(back.alpha, src[..., 1])
    dio.write_image(tmp_path / "out.png", img)  # PNG via OpenCV: gray spread to RGB
    assert np.array_equal(cv2_read(tmp_path / "out.png"), src[..., [0, 0, 0, 1]])


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_tiff_round_trip(tmp_path, dtype):
    src = RNG.random((5, 6, 4), dtype=np.float32) if dtype == np.float32 else rand((5, 6, 4), dtype)
    tifffile.imwrite(tmp_path / "in.tif", src, photometric="rgb", extrasamples=["unassalpha"])
    img = dio.read_image(tmp_path / "in.tif")
    assert img.dtype == dtype and np.array_equal(img.alpha, src[..., 3])
    dio.write_image(tmp_path / "out.tiff", img)
    assert np.array_equal(tifffile.imread(tmp_path / "out.tiff"), src)


def test_tiff_lzw_fallback_orientation_and_nan(tmp_path):
    src = rand((4, 5, 3))
    PILImage.fromarray(src).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    assert np.array_equal(scaled(dio.read_image(tmp_path / "lzw.tif")), src)
    tifffile.imwrite(tmp_path / "o.tif", src, photometric="rgb", extratags=[(274, "H", 1, 8)])
    assert np.array_equal(scaled(dio.read_image(tmp_path / "o.tif")), np.rot90(src, 1))
    tifffile.imwrite(tmp_path / "nan.tif", np.full((3, 3), np.nan, np.float32))
    with pytest.raises(UnsupportedImageError, match="nan.tif.*NaN"):
        dio.read_image(tmp_path / "nan.tif")


def test_jpeg_exif_orientation_6(tmp_path):
    src = np.zeros((20, 40, 3), np.uint8)  # H=20, W=40: left half red, right half blue
    src[:, :20, 0], src[:, 20:, 2] = 255, 255
    exif = PILImage.Exif()
    exif[0x0112], exif[0x010F] = 6, "TestCam"
    exif.get_ifd(0x8769)[0x9003] = "2024:01:02 03:04:05"
    PILImage.fromarray(src).save(tmp_path / "o.jpg", exif=exif, icc_profile=SRGB, quality=95)
    img = dio.read_image(tmp_path / "o.jpg")
    assert img.pixels.shape == (40, 20, 3) and img.icc == SRGB
    assert np.abs(img.pixels * 255 - np.rot90(src, -1)).mean() < 3  # red on top after rotating
    assert img.pixels[:15, :, 0].min() > 0.9 and img.pixels[25:, :, 2].min() > 0.9
    dio.write_image(tmp_path / "out.jpg", img)
    with PILImage.open(tmp_path / "out.jpg") as out:
        tags = out.getexif()
        assert out.size == (20, 40) and out.info["icc_profile"] == SRGB
        assert (tags[0x0112], tags[0x010F]) == (1, "TestCam")
        assert tags.get_ifd(0x8769)[0x9003] == "2024:01:02 03:04:05"


@pytest.mark.parametrize("orientation", range(2, 9))
def test_orientation_matches_pillow_for_pixels_and_alpha(tmp_path, orientation):
    src = rand((3, 5, 4))
    im = PILImage.fromarray(src, "RGBA")
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(tmp_path / "o.png", exif=exif)
    img = dio.read_image(tmp_path / "o.png")
    with PILImage.open(tmp_path / "o.png") as im:
        want = np.asarray(ImageOps.exif_transpose(im))
    assert np.array_equal(scaled(img), want[..., :3]) and np.array_equal(img.alpha, want[..., 3])
    tags = PILImage.Exif()
    tags.load(img.exif)
    assert tags[0x0112] == 1


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("a.png", np.uint8), ("b.png", np.uint16), ("c.jpg", np.uint8), ("d.tif", np.uint16),
     ("e.webp", np.uint8)],  # fmt: skip
)
def test_icc_and_exif_preserved_on_write(tmp_path, name, dtype):
    exif = PILImage.Exif()
    exif[0x010F] = "TestCam"
    img = dio.Image(pixels=RNG.random((4, 6, 3), dtype=np.float32), dtype=np.dtype(dtype),
                    icc=SRGB, exif=exif.tobytes()[6:])  # fmt: skip
    dio.write_image(tmp_path / name, img)
    back = dio.read_image(tmp_path / name)
    assert back.icc == SRGB and back.dtype == dtype
    with PILImage.open(tmp_path / name) as im:
        assert im.info.get("icc_profile") == SRGB
        if not name.endswith(".tif"):  # TIFF output carries no EXIF (documented)
            assert im.getexif()[0x010F] == "TestCam"


def test_webp_lossless_and_bmp_round_trip(tmp_path):
    src = rand((6, 5, 4))
    cv2_write(tmp_path / "in.png", src)
    img = dio.read_image(tmp_path / "in.png")
    dio.write_image(tmp_path / "out.webp", img, quality=100)
    back = dio.read_image(tmp_path / "out.webp")
    assert back.format == "webp" and np.array_equal(scaled(back), src[..., :3])
    assert np.array_equal(back.alpha, src[..., 3])
    dio.write_image(tmp_path / "out.bmp", dio.Image(pixels=img.pixels, dtype=img.dtype))
    assert np.array_equal(scaled(dio.read_image(tmp_path / "out.bmp")), src[..., :3])


def test_bit_depth_conversions(tmp_path):
    src = rand((3, 4, 4))
    cv2_write(tmp_path / "in.png", src)
    img = dio.read_image(tmp_path / "in.png")
    dio.write_image(tmp_path / "up.png", img, bit_depth=16)
    assert np.array_equal(cv2_read(tmp_path / "up.png"), src.astype(np.uint16) * 257)
    dio.write_image(tmp_path / "down.png", dio.read_image(tmp_path / "up.png"), bit_depth=8)
    assert np.array_equal(cv2_read(tmp_path / "down.png"), src)
    flt = dio.Image(pixels=np.full((2, 2, 3), 0.5, np.float32), dtype=np.dtype(np.float32))
    dio.write_image(tmp_path / "f.png", flt)
    assert cv2_read(tmp_path / "f.png").dtype == np.uint16
    dio.write_image(tmp_path / "f.jpg", flt.with_pixels(flt.pixels + 5))  # clipped to 1
    assert cv2_read(tmp_path / "f.jpg").min() == 255
    dio.write_image(tmp_path / "f.tif", flt.with_pixels(flt.pixels - 5))  # float TIFF clipped too
    assert tifffile.imread(tmp_path / "f.tif").dtype == np.float32
    assert tifffile.imread(tmp_path / "f.tif").max() == 0


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


GOOD_PNG = cv2.imencode(".png", rand((32, 32, 3)))[1].tobytes()
GOOD_JPG = cv2.imencode(".jpg", rand((32, 32, 3)))[1].tobytes()
BAD_FILES = [
    ("empty.png", b"", "empty file"),
    ("half.jpg", GOOD_JPG[: len(GOOD_JPG) // 2], "cannot decode"),
    ("half.png", GOOD_PNG[: len(GOOD_PNG) // 2], "cannot decode"),
    ("idat.png", GOOD_PNG[:33] + png_chunk(b"IDAT", b"garbage") + png_chunk(b"IEND", b""),
     "cannot decode"),  # fmt: skip
    ("head.png", GOOD_PNG[:40], "corrupt png header"),
    ("text.png", b"hello world\n", "not a PNG"),
    ("image.xyz", GOOD_PNG, "extension"),
    ("missing.png", None, "no such file"),
]


@pytest.mark.parametrize(("name", "data", "what"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_files_raise_image_format_error(tmp_path, name, data, what):
    if data is not None:
        (tmp_path / name).write_bytes(data)
    with pytest.raises(ImageFormatError, match=what) as err:
        dio.read_image(tmp_path / name)
    assert name in str(err.value) and "\n" not in str(err.value)


def forged_png(width, height):  # valid header, no real pixel data
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + png_chunk(b"IDAT", b"") + png_chunk(b"IEND", b"")


def test_max_pixels_guard_runs_before_decoding(tmp_path, monkeypatch):
    (tmp_path / "bomb.png").write_bytes(forged_png(50_000, 50_000))
    with pytest.raises(ImageTooLargeError, match="2500000000.*200000000"):
        dio.read_image(tmp_path / "bomb.png")
    (tmp_path / "small.png").write_bytes(GOOD_PNG)
    monkeypatch.setattr(dio, "DECODERS", [("boom", lambda *a: pytest.fail("decoded"))])
    with pytest.raises(ImageTooLargeError, match="1024.*1000"):
        dio.read_image(tmp_path / "small.png", max_pixels=1000)
    monkeypatch.setenv("DEBLURCLI_MAX_PIXELS", "100")
    with pytest.raises(ImageTooLargeError, match="small.png"):
        dio.read_image(tmp_path / "small.png")


def test_pillow_bomb_limit_does_not_override_ours(tmp_path, monkeypatch):
    (tmp_path / "big.png").write_bytes(forged_png(15_000, 10_000))  # 150 Mpx: Pillow refuses
    monkeypatch.setattr(dio, "DECODERS", [("none", lambda *a: None)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        with pytest.raises(ImageFormatError, match="cannot decode"):
            dio.read_image(tmp_path / "big.png")


@pytest.mark.parametrize("name", ["out.jpg", "out.bmp"])
def test_alpha_into_jpeg_or_bmp_is_refused(tmp_path, name):
    img = dio.Image(pixels=np.zeros((2, 2, 3), np.float32), dtype=np.dtype(np.uint8),
                    alpha=np.zeros((2, 2), np.uint8))  # fmt: skip
    with pytest.raises(UnsupportedImageError, match="png"):
        dio.write_image(tmp_path / name, img)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_target_on_encoder_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    img = dio.Image(pixels=np.zeros((2, 2, 3), np.float32), dtype=np.dtype(np.uint8))

    def boom(*args, **kwargs):
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(cv2, "imencode", boom)
    with pytest.raises(RuntimeError):
        dio.write_image(target, img)
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]
    monkeypatch.undo()
    dio.write_image(target, img)
    assert target.read_bytes()[:4] == b"\x89PNG" and list(tmp_path.iterdir()) == [target]


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    img = dio.Image(pixels=np.zeros((2, 2, 3), np.float32), dtype=np.dtype(np.uint8))
    old = os.umask(0o027)
    try:
        dio.write_image(tmp_path / "new.png", img)  # a new file: 0o666 less the umask
        assert (tmp_path / "new.png").stat().st_mode & 0o777 == 0o640
        private = tmp_path / "private.png"
        private.write_bytes(b"old")
        private.chmod(0o600)
        dio.write_image(private, img)  # a replaced file keeps its permissions
        assert private.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_unicode_path_and_suffix_helpers(tmp_path):
    path = tmp_path / "ünïcødé 写真.PNG"
    src = rand((3, 4, 3))
    dio.write_image(path, dio.Image(pixels=src / np.float32(255), dtype=np.dtype(np.uint8)))
    assert np.array_equal(scaled(dio.read_image(path)), src)
    assert dio.format_from_suffix("x.JPEG") == "jpeg" and dio.is_image_path("a.tif")
    assert not dio.is_image_path("a.txt")
    with pytest.raises(UnsupportedImageError, match="txt"):
        dio.format_from_suffix("a.txt")

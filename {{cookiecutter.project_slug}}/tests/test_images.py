"""Images are sniffed by content, read without EXIF rotation and always handed out as RGB."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from {{ cookiecutter.package_name }}.contract.errors import ErrorCode, ExecutorError
from {{ cookiecutter.package_name }}.contract.images import (
    check_image,
    image_size,
    open_image,
    sniff_image_type,
)


def save(path, image, format=None, **kwargs):
    image.save(path, format=format, **kwargs)
    return path


def rgb(width=12, height=8, color=(200, 30, 60)):
    return Image.new("RGB", (width, height), color)


@pytest.mark.parametrize(
    ("name", "format", "expected"),
    [("a.jpg", "JPEG", "jpg"), ("a.png", "PNG", "png"), ("a.bmp", "BMP", "bmp")],
)
def test_sniff_by_magic_bytes(tmp_path, name, format, expected):
    path = save(tmp_path / name, rgb(), format)
    assert sniff_image_type(path) == expected
    assert sniff_image_type(str(path)) == expected


def test_sniff_ignores_the_extension(tmp_path):
    assert sniff_image_type(save(tmp_path / "really-png.jpg", rgb(), "PNG")) == "png"
    assert sniff_image_type(save(tmp_path / "really-jpeg.png", rgb(), "JPEG")) == "jpg"
    assert sniff_image_type(save(tmp_path / "no-extension", rgb(), "BMP")) == "bmp"


def test_sniff_unknown_missing_and_empty(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert sniff_image_type(text) is None
    assert sniff_image_type(empty) is None
    assert sniff_image_type(tmp_path / "missing.jpg") is None


def test_png_named_jpg_opens(tmp_path):
    path = save(tmp_path / "mismatch.jpg", rgb(10, 6), "PNG")
    image = open_image(path)
    assert image.mode == "RGB"
    assert image.size == (10, 6)
    assert image.getpixel((0, 0)) == (200, 30, 60)
    assert image_size(path) == (10, 6)
    assert check_image(path) == (10, 6)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "1", "CMYK"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    source = rgb(9, 7).convert(mode)
    format = "JPEG" if mode == "CMYK" else "PNG"
    path = save(tmp_path / f"image-{mode}.img", source, format)
    image = open_image(path)
    assert image.mode == "RGB"
    assert image.size == (9, 7)
    assert np.asarray(image).shape == (7, 9, 3)


def test_grey_values_are_kept(tmp_path):
    path = save(tmp_path / "grey.png", Image.new("L", (4, 3), 77), "PNG")
    assert open_image(path).getpixel((1, 1)) == (77, 77, 77)


def test_rgba_drops_alpha_keeps_colour(tmp_path):
    path = save(tmp_path / "rgba.png", Image.new("RGBA", (4, 3), (10, 20, 30, 0)), "PNG")
    assert open_image(path).getpixel((0, 0)) == (10, 20, 30)


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (5, 5), 1)
    image.putpalette([0, 0, 0, 250, 100, 50] + [0] * (254 * 3))
    path = save(tmp_path / "palette.png", image, "PNG", transparency=0)
    converted = open_image(path)
    assert converted.mode == "RGB"
    assert converted.getpixel((2, 2)) == (250, 100, 50)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 2560, 65535]], dtype=np.uint16)
    path = save(tmp_path / "deep.png", Image.fromarray(values), "PNG")
    pixels = np.asarray(open_image(path))
    assert pixels.dtype == np.uint8
    assert pixels[0, :, 0].tolist() == [0, 10, 255]


def test_exif_orientation_is_not_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = save(tmp_path / "rotated.jpg", rgb(40, 20), "JPEG", exif=exif.tobytes())
    with Image.open(path) as stored:
        # Sanity: the tag is really there, a viewer would show the image 20 x 40.
        assert ImageOps.exif_transpose(stored).size == (20, 40)
    assert open_image(path).size == (40, 20)
    assert image_size(path) == (40, 20)
    assert check_image(path) == (40, 20)


def test_non_ascii_and_spaces_in_names(tmp_path):
    folder = tmp_path / "dossier à part"
    folder.mkdir()
    path = save(folder / "图 片 ü (1).png", rgb(5, 4), "PNG")
    assert sniff_image_type(path) == "png"
    assert open_image(path).size == (5, 4)
    assert image_size(str(path)) == (5, 4)


def truncated(tmp_path, name, format, keep=0.5):
    full = save(tmp_path / f"full-{name}", Image.effect_noise((64, 48), 60).convert("RGB"), format)
    data = full.read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize(("name", "format"), [("cut.jpg", "JPEG"), ("cut.png", "PNG")])
def test_truncated_image_is_an_image_error_naming_the_path(tmp_path, name, format):
    path = truncated(tmp_path, name, format)
    with pytest.raises(ExecutorError) as caught:
        open_image(path)
    assert caught.value.code == ErrorCode.IMAGE
    assert str(path) in caught.value.message
    assert caught.value.message.startswith("cannot read image ")


@pytest.mark.parametrize(
    ("name", "format"), [("cut.jpg", "JPEG"), ("cut.png", "PNG"), ("cut.bmp", "BMP")]
)
def test_check_image_catches_truncation_that_the_header_hides(tmp_path, name, format):
    path = truncated(tmp_path, name, format, keep=0.7)
    # The header is intact, so the size alone looks fine ...
    assert image_size(path) == (64, 48)
    # ... but the image cannot be used.
    with pytest.raises(ExecutorError) as caught:
        check_image(path)
    assert caught.value.code == ErrorCode.IMAGE
    assert str(path) in caught.value.message


def test_check_image_accepts_bytes_after_the_jpeg_end(tmp_path):
    path = save(tmp_path / "padded.jpg", rgb(16, 16), "JPEG")
    path.write_bytes(path.read_bytes() + b"\0" * 10000)
    assert check_image(path) == (16, 16)
    assert open_image(path).size == (16, 16)


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"\x89PNG\r\n\x1a\n" + b"\0" * 20])
def test_garbage_is_an_image_error(tmp_path, content):
    path = tmp_path / "bad image.png"
    path.write_bytes(content)
    for reader in (open_image, image_size, check_image):
        with pytest.raises(ExecutorError) as caught:
            reader(path)
        assert caught.value.code == ErrorCode.IMAGE
        assert str(path) in caught.value.message


def test_missing_file_is_an_image_error(tmp_path):
    path = tmp_path / "gone.jpg"
    for reader in (open_image, image_size, check_image):
        with pytest.raises(ExecutorError) as caught:
            reader(path)
        assert caught.value.code == ErrorCode.IMAGE
        assert str(path) in caught.value.message


def test_open_image_returns_an_independent_copy(tmp_path):
    path = save(tmp_path / "a.png", rgb(), "PNG")
    image = open_image(path)
    path.unlink()
    # Fully loaded: usable after the file is gone.
    assert image.getpixel((3, 3)) == (200, 30, 60)

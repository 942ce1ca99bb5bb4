import io

import numpy as np
import pytest
from PIL import Image

from facellm.common.cli import FaceLLMError
from facellm.common.images import downscale, load_image, to_rgb


def _roundtrip(image: Image.Image, fmt: str, tmp_path, **save) -> Image.Image:
    path = tmp_path / f"x.{fmt.lower()}"
    image.save(path, format=fmt, **save)
    return load_image(path)


def test_rgba_is_flattened_onto_white_not_black(tmp_path):
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    image.putpixel((0, 0), (200, 10, 10, 255))
    rgb = _roundtrip(image, "PNG", tmp_path)
    assert (
        rgb.mode == "RGB"
        and rgb.getpixel((5, 5)) == (255, 255, 255)
        and rgb.getpixel((0, 0)) == (200, 10, 10)
    )


def test_la_and_palette_with_transparency(tmp_path):
    la = Image.new("LA", (4, 4), (0, 0))
    assert _roundtrip(la, "PNG", tmp_path).getpixel((1, 1)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    palette.info["transparency"] = 0
    assert _roundtrip(palette, "PNG", tmp_path, transparency=0).getpixel((2, 2)) == (255, 255, 255)
    opaque = Image.new("P", (4, 4), 0)
    opaque.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    assert _roundtrip(opaque, "PNG", tmp_path).getpixel((2, 2)) == (10, 20, 30)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    rgb = _roundtrip(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", tmp_path)
    red, green, blue = rgb.getpixel((8, 8))
    assert rgb.mode == "RGB" and red > 200 and green < 60 and blue < 60


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 16384], [32768, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    rgb = _roundtrip(image, "PNG", tmp_path)
    assert [rgb.getpixel(p)[0] for p in ((0, 0), (1, 0), (0, 1), (1, 1))] == [0, 64, 128, 255]
    assert to_rgb(Image.fromarray(np.array([[5, 10]], dtype=np.int32))).getpixel((1, 0)) == (255,) * 3


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), "white")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert load_image(path).size == (20, 40)


def test_large_images_are_downscaled_like_llamafactory():
    from llamafactory.data.mm_plugin import BasePlugin

    big = Image.new("RGB", (3000, 2000), "gray")
    ours = downscale(big, 224 * 224)
    theirs = BasePlugin(None, None, None)._preprocess_image(
        big, image_max_pixels=224 * 224, image_min_pixels=1
    )
    assert ours.size == theirs.size and ours.width * ours.height <= 224 * 224
    assert downscale(Image.new("RGB", (100, 100)), 224 * 224).size == (100, 100)


def test_truncated_and_non_images_are_named(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "blue").save(buffer, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[:300])
    with pytest.raises(FaceLLMError, match=r"cut\.jpg: unreadable image"):
        load_image(tmp_path / "cut.jpg")
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(FaceLLMError, match=r"notes\.png: not an image"):
        load_image(tmp_path / "notes.png")


def test_extreme_shapes_and_decompression_bombs(tmp_path, monkeypatch):
    Image.new("RGB", (60000, 1), "white").save(tmp_path / "strip.png")
    strip = load_image(tmp_path / "strip.png", max_pixels=224 * 224)
    assert strip.height >= 1 and strip.width * strip.height <= 224 * 224
    Image.new("RGB", (400, 400), "white").save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100 // 2)  # 400 x 400 is over twice the limit
    with pytest.raises(FaceLLMError, match=r"big\.png: too many pixels"):
        load_image(tmp_path / "big.png")

"""Face images from the wild, made to look like what the model was trained on.

Photos arrive rotated by their camera (EXIF), with alpha channels, as palettes, CMYK or 16-bit scans, and far
larger than a FairFace crop. Everything here ends in an RGB image no larger than the training recipes'
`image_max_pixels`, downscaled with the same arithmetic LLaMA-Factory applies during training.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facellm.common.cli import FaceLLMError

# The recipes train with image_max_pixels 224 x 224 (a FairFace crop); inference shrinks larger inputs the
# same way, so a 12-megapixel photo reaches the processor as it would have reached training.
TRAINING_MAX_PIXELS = 224 * 224
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def images_under(folder: Path) -> list[Path]:
    """Every image file under FOLDER (by suffix, any case), searched recursively, in sorted order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with transparency flattened onto white and high bit depths scaled, not clipped, to 8 bits."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            values = values / 257.0  # 0..65535 -> 0..255
        else:
            low, high = float(values.min()), float(values.max())
            values = (values - low) * (255.0 / (high - low)) if high > low else values * 0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)).convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def downscaled_size(size: tuple[int, int], max_pixels: int | None = TRAINING_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of an image of SIZE once `downscale` has shrunk it."""
    width, height = size
    if max_pixels and width * height > max_pixels:
        factor = math.sqrt(max_pixels / (width * height))
        new_width, new_height = max(1, int(width * factor)), max(1, int(height * factor))
        if new_width * new_height > max_pixels:  # a strip so thin that a side had to stay at 1 pixel
            if new_width > new_height:
                new_width = max_pixels // new_height
            else:
                new_height = max_pixels // new_width
        return new_width, new_height
    return width, height


def downscale(image: Image.Image, max_pixels: int | None = TRAINING_MAX_PIXELS) -> Image.Image:
    """Shrink to at most MAX_PIXELS keeping the aspect ratio, as LLaMA-Factory does before its processor."""
    size = downscaled_size(image.size, max_pixels)
    return image.resize(size) if size != image.size else image


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> Image.Image:
    """An RGB image with its EXIF orientation applied (and downscaled when MAX_PIXELS is given); a clear
    error naming the file when it is missing, not an image, or truncated."""
    path = Path(path)
    with named_image_errors(path), Image.open(path) as image:
        image.load()  # decode now: a truncated file fails here, not inside the model
        return downscale(to_rgb(ImageOps.exif_transpose(image)), max_pixels)


@contextmanager
def named_image_errors(path: Path):
    """Around the opening of the image PATH (checked to exist first): Pillow's errors become one line that
    names the file and the problem."""
    if not path.is_file():
        raise FaceLLMError(f"{path}: image not found")
    try:
        yield
    except Image.DecompressionBombError:
        raise FaceLLMError(
            f"{path}: too many pixels to decode safely (over {Image.MAX_IMAGE_PIXELS})"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        reason = (
            "not an image" if isinstance(error, UnidentifiedImageError) else f"unreadable image ({error})"
        )
        raise FaceLLMError(f"{path}: {reason}") from None

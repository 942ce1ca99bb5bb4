"""Crop the largest face of a photo the way FairFace cropped its images, so inputs look like training data.

The detector is MTCNN from the `facenet-pytorch` package, whose weights ship inside the package: nothing is
downloaded at run time. FairFace's crops (the `margin025` in its folder name) keep the face box plus a
quarter of its size on every side; `crop_face` does the same, as a square where the photo allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from PIL import Image

FAIRFACE_MARGIN = 0.25
MIN_CONFIDENCE = 0.9


@dataclass(frozen=True)
class Box:
    left: float
    top: float
    right: float
    bottom: float
    confidence: float

    @property
    def area(self) -> float:
        return max(0.0, self.right - self.left) * max(0.0, self.bottom - self.top)


@lru_cache(maxsize=1)
def _detector():
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, device="cpu")


MIN_SIDE = 20  # MTCNN's smallest face; below it there is nothing to find


def largest_face(image: Image.Image, min_confidence: float = MIN_CONFIDENCE) -> Box | None:
    if min(image.size) < MIN_SIDE:
        return None
    boxes, probabilities = _detector().detect(image.convert("RGB"))
    if boxes is None:
        return None
    found = [Box(*map(float, box), float(p)) for box, p in zip(boxes, probabilities, strict=True)]
    found = [box for box in found if box.confidence >= min_confidence]
    return max(found, key=lambda box: box.area) if found else None


def crop_box(box: Box, width: int, height: int, margin: float = FAIRFACE_MARGIN) -> tuple[int, int, int, int]:
    """A square around BOX grown by MARGIN of its size on each side, moved (not cut) to stay inside the
    photo when it can, and cut to the photo when it cannot."""
    side = max(box.right - box.left, box.bottom - box.top) * (1 + 2 * margin)
    side = min(side, width, height)
    centre_x, centre_y = (box.left + box.right) / 2, (box.top + box.bottom) / 2
    side_px = round(side)
    left = round(min(max(0.0, centre_x - side / 2), width - side))
    top = round(min(max(0.0, centre_y - side / 2), height - side))
    left, top = max(0, min(left, width - side_px)), max(0, min(top, height - side_px))
    return left, top, left + side_px, top + side_px  # square to the pixel


def crop_face(image: Image.Image, margin: float = FAIRFACE_MARGIN) -> tuple[Image.Image, Box | None]:
    """(the FairFace-style crop of the largest face, its box), or (the whole image, None) with no face."""
    box = largest_face(image)
    if box is None:
        return image, None
    return image.crop(crop_box(box, image.width, image.height, margin)), box

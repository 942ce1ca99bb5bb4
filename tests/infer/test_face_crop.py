import os

import matplotlib
from PIL import Image

from facellm.infer.face_crop import Box, crop_box, crop_face

# A public-domain portrait that ships inside matplotlib: a real face with nothing downloaded.
PORTRAIT = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
PASTED_AT = (400, 150)


def test_the_largest_face_is_found_where_it_was_pasted_and_cropped_with_the_fairface_margin():
    portrait = Image.open(PORTRAIT).convert("RGB")
    canvas = Image.new("RGB", (1000, 800), (30, 90, 40))
    canvas.paste(portrait, PASTED_AT)
    small = portrait.resize((portrait.width // 4, portrait.height // 4))
    canvas.paste(small, (40, 40))  # a second, smaller face: not the one to keep
    crop, box = crop_face(canvas)
    left, top = PASTED_AT
    assert box is not None and box.confidence > 0.9
    assert left <= box.left < box.right <= left + portrait.width
    assert top <= box.top < box.bottom <= top + portrait.height
    side = max(box.right - box.left, box.bottom - box.top)
    assert crop.width == crop.height == round(side * 1.5)  # the box plus 25 % on every side


def test_no_face_gives_the_whole_image():
    blank = Image.new("RGB", (300, 200), (120, 120, 120))
    crop, box = crop_face(blank)
    assert box is None and crop is blank


def test_crop_box_moves_inside_the_photo_and_never_exceeds_it():
    assert crop_box(Box(0, 0, 40, 40, 1.0), 100, 100) == (0, 0, 60, 60)
    assert crop_box(Box(80, 80, 100, 100, 1.0), 100, 100) == (70, 70, 100, 100)
    assert crop_box(Box(10, 10, 90, 90, 1.0), 100, 60) == (20, 0, 80, 60)


def test_images_too_small_for_a_face():
    for size in ((3, 3), (1, 500)):
        image = Image.new("RGB", size, "white")
        assert crop_face(image) == (image, None)

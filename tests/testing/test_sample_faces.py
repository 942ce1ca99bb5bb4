from PIL import Image

from facellm.data.fairface import GENDERS, RACES, load_split
from facellm.testing.sample_faces import IMAGE_SIZE, write_sample
from tests.support import SAMPLE_FACES


def test_generated_sample_matches_the_bundled_one(tmp_path):
    root = write_sample(tmp_path, count=16, seed=0)
    assert (root / "fairface_label_val.csv").read_text() == (
        SAMPLE_FACES / "fairface_label_val.csv"
    ).read_text()
    _, records = load_split(root, "val")
    for record in records:
        image = Image.open(root / "fairface-img-margin025-trainval" / record.file)
        assert image.size == (IMAGE_SIZE, IMAGE_SIZE) and image.mode == "RGB"
        bundled = Image.open(SAMPLE_FACES / "fairface-img-margin025-trainval" / record.file)
        assert image.tobytes() == bundled.tobytes(), record.file


def test_sample_covers_every_race_and_gender():
    _, records = load_split(SAMPLE_FACES, "val")
    assert {r.race for r in records} == set(RACES)
    assert {r.gender for r in records} == set(GENDERS)
    assert any(r.is_child for r in records)


def test_same_seed_same_pixels_other_seed_other_pixels(tmp_path):
    a = write_sample(tmp_path / "a", count=2, seed=1)
    b = write_sample(tmp_path / "b", count=2, seed=1)
    c = write_sample(tmp_path / "c", count=2, seed=2)
    image = "fairface-img-margin025-trainval/val/1.jpg"
    assert Image.open(a / image).tobytes() == Image.open(b / image).tobytes()
    assert Image.open(a / image).tobytes() != Image.open(c / image).tobytes()

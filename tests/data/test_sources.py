"""The label sources besides FairFace (facellm.data.sources): each read in its official layout from a
format-identical copy with drawn faces (facellm.testing.label_sources), every refusal one line naming the file
and the line, and the short-answer and multiple-choice items of their labels."""

import re
import shutil

import pytest

from facellm.common import mcq
from facellm.common.cli import FaceLLMError
from facellm.data import fairface, items
from facellm.data.sources import affectnet, celeba, rafdb, registry, utkface
from facellm.data.sources.base import SourceRecord
from facellm.testing import label_sources
from tests.support import SAMPLE_FACES


def refused(needle: str):
    """A FaceLLMError whose one-line message contains NEEDLE."""
    return pytest.raises(FaceLLMError, match=re.escape(needle))


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def replace_line(path, number, text):
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


# vocabularies, as the releases define them


def test_vocabularies_are_the_releases():
    assert affectnet.EXPRESSIONS + affectnet.NOT_EMOTIONS == (
        "Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt", "None", "Uncertain",
        "No-Face",
    )  # fmt: skip
    assert rafdb.CODES == {
        "1": "Surprise", "2": "Fear", "3": "Disgust", "4": "Happiness", "5": "Sadness", "6": "Anger",
        "7": "Neutral",
    }  # fmt: skip
    assert len(celeba.ATTRIBUTES) == 40 and len(set(celeba.ATTRIBUTES)) == 40
    assert celeba.ATTRIBUTES[:3] == ("5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive")
    assert (celeba.ATTRIBUTES[20], celeba.ATTRIBUTES[24], celeba.ATTRIBUTES[-1]) == (
        "Male",
        "No_Beard",
        "Young",
    )
    assert utkface.RACES == ("White", "Black", "Asian", "Indian", "Others")
    assert utkface.GENDERS == ("Male", "Female") and utkface.MAX_AGE == 116


# UTKFace


def test_utkface_labels_come_from_the_file_names(tmp_path):
    root = label_sources.write_utkface(tmp_path / "utk")
    image_root, records, skipped = utkface.load_split(root)
    assert image_root == root and skipped == {}
    assert len(records) == len(label_sources.UTKFACE_LABELS)
    by_name = {record.file: record for record in records}
    assert by_name["UTKFace/0_0_0_20170110000000000.jpg.chip.jpg"].labels == {
        "age": 0, "gender": "Male", "race": "White",
    }  # fmt: skip
    assert by_name["UTKFace/116_1_2_20170110000000011.jpg.chip.jpg"].labels == {
        "age": 116, "gender": "Female", "race": "Asian",
    }  # fmt: skip
    assert {r.labels["race"] for r in records} == set(utkface.RACES)
    assert all((image_root / r.file).is_file() and r.split == "all" for r in records)
    assert [r.file for r in records] == sorted(r.file for r in records)


@pytest.mark.parametrize(("folder", "aligned"), [("part1", False), (".", True), (".", False)])
def test_utkface_in_the_wild_names_and_images_in_the_root_itself(tmp_path, folder, aligned):
    root = label_sources.write_utkface(tmp_path / "utk", folder=folder, aligned=aligned)
    _, records, _ = utkface.load_split(root)
    assert len(records) == len(label_sources.UTKFACE_LABELS)
    suffix = ".jpg.chip.jpg" if aligned else "_20170110000000003.jpg"
    assert any(r.file.endswith(suffix) and r.labels["age"] == 9 for r in records)
    assert all(r.file.startswith("part1/") == (folder == "part1") for r in records)


def test_utkface_names_without_the_four_fields_are_skipped_and_counted(tmp_path):
    root = label_sources.write_utkface(tmp_path / "utk", malformed=True)
    (root / "UTKFace" / "cover.jpg").write_bytes((root / "UTKFace" / utkface_any(root)).read_bytes())
    (root / "UTKFace" / "landmark_list.txt").write_text("not an image\n")
    _, records, skipped = utkface.load_split(root)
    assert len(records) == len(label_sources.UTKFACE_LABELS)
    assert skipped == {
        utkface.MALFORMED: [
            f"UTKFace/{name}" for name in sorted([*label_sources.UTKFACE_MALFORMED, "cover.jpg"])
        ]
    }


def utkface_any(root):
    return next(p.name for p in (root / "UTKFace").iterdir())


@pytest.mark.parametrize(
    ("name", "needle"),
    [("30_2_0_20170110000000099.jpg.chip.jpg", "gender 2 is not a UTKFace label (0 male, 1 female)"),
     ("30_0_5_20170110000000099.jpg.chip.jpg", "race 5 is not a UTKFace label (0 White, 1 Black, 2 Asian, "
                                               "3 Indian, 4 Others)"),
     ("117_0_0_20170110000000099.jpg.chip.jpg", "age 117 is outside UTKFace's 0-116")],
)  # fmt: skip
def test_utkface_labels_outside_the_vocabulary_are_refused_naming_the_file(tmp_path, name, needle):
    root = label_sources.write_utkface(tmp_path / "utk")
    shutil.copy(root / "UTKFace" / utkface_any(root), root / "UTKFace" / name)
    with refused(needle) as error:
        utkface.load_split(root)
    assert one_line(error).startswith(f"{root / 'UTKFace' / name}: ")


def test_utkface_the_same_face_twice_is_refused(tmp_path):
    root = label_sources.write_utkface(tmp_path / "utk")
    shutil.copytree(root / "UTKFace", root / "crop_part1")
    with refused("the same face is both UTKFace/0_0_0_20170110000000000.jpg.chip.jpg and crop_part1/0_0_0_"):
        utkface.load_split(root)


def test_utkface_wrong_root_or_split(tmp_path):
    with refused("UTKFace root folder does not exist"):
        utkface.load_split(tmp_path / "nowhere")
    (tmp_path / "empty" / "deep" / "deeper").mkdir(parents=True)
    with refused("no UTKFace images in it or one folder down"):
        utkface.load_split(tmp_path / "empty")
    root = label_sources.write_utkface(tmp_path / "utk")
    with refused("split 'train' is not one of all (UTKFace has no official split)"):
        utkface.load_split(root, "train")


# CelebA


def celeba_rows(root):
    """Image -> its row of -1/1 as the attribute file writes it."""
    lines = (root / "Anno" / "list_attr_celeba.txt").read_text().splitlines()[2:]
    return {line.split()[0]: line.split()[1:] for line in lines}


@pytest.mark.parametrize("flat", [False, True])
def test_celeba_attributes_and_partition_in_both_layouts(tmp_path, flat):
    root = label_sources.write_celeba(tmp_path / "celeba", flat=flat)
    sizes = {}
    for split in ("train", "val", "test"):
        image_root, records, skipped = celeba.load_split(root, split)
        assert image_root.name == "img_align_celeba" and skipped == {}
        assert all((image_root / r.file).is_file() and r.split == split for r in records)
        sizes[split] = [r.file for r in records]
    assert sizes == {
        "train": ["000001.jpg", "000002.jpg", "000003.jpg", "000005.jpg"],
        "val": ["000004.jpg", "000007.jpg"], "test": ["000006.jpg", "000008.jpg"],
    }  # fmt: skip
    if not flat:
        rows = celeba_rows(root)
        for record in celeba.load_split(root, "train").records:
            assert dict(record.labels) == {
                name: value == "1" for name, value in zip(celeba.ATTRIBUTES, rows[record.file], strict=True)
            }


def test_celeba_columns_apart_by_any_spaces_and_windows_line_ends(tmp_path):
    root = label_sources.write_celeba(tmp_path / "celeba")
    path = root / "Anno" / "list_attr_celeba.txt"
    path.write_bytes(path.read_bytes().replace(b"  ", b" \t ").replace(b"\n", b"\r\n"))
    assert len(celeba.load_split(root, "train").records) == 4


@pytest.mark.parametrize(
    ("line", "text", "needle"),
    [(3, "000001.jpg" + " 1" * 39, "list_attr_celeba.txt:3: 39 attribute values, expected 40"),
     (4, "000002.jpg" + " 1" * 41, "list_attr_celeba.txt:4: 41 attribute values, expected 40"),
     (5, "000003.jpg" + " 1" * 31 + " 0" + " 1" * 8,
      "list_attr_celeba.txt:5: Smiling is '0', expected 1 or -1"),
     (4, "000001.jpg" + " 1" * 40,
      "list_attr_celeba.txt:4: image '000001.jpg' is listed twice (first on line 3)"),
     (1, "nine", "list_attr_celeba.txt:1: expected the number of images, found 'nine'"),
     (1, "9", "list_attr_celeba.txt:1: says 9 images, the file lists 8"),
     (2, " ".join(celeba.ATTRIBUTES[:39]),
      "list_attr_celeba.txt:2: not CelebA's 40 attribute names (39 names"),
     (2, " ".join(celeba.ATTRIBUTES).replace("Smiling", "Smile"),
      "list_attr_celeba.txt:2: not CelebA's 40 attribute names (name 32 is 'Smile', expected 'Smiling')")],
)  # fmt: skip
def test_celeba_attribute_file_errors_name_the_line(tmp_path, line, text, needle):
    root = label_sources.write_celeba(tmp_path / "celeba")
    replace_line(root / "Anno" / "list_attr_celeba.txt", line, text)
    with refused(needle) as error:
        celeba.load_split(root, "val")
    assert one_line(error).startswith(str(root / "Anno" / "list_attr_celeba.txt"))


@pytest.mark.parametrize(
    ("line", "text", "needle"),
    [(2, "000002.jpg 3", "list_eval_partition.txt:2: partition '3' is not one of 0 train, 1 val, 2 test"),
     (2, "000002.jpg", "list_eval_partition.txt:2: expected `<image> 0|1|2`, found '000002.jpg'"),
     (2, "000001.jpg 0", "list_eval_partition.txt:2: image '000001.jpg' is listed twice (first on line 1)"),
     (2, "999999.jpg 0", "list_eval_partition.txt:2: image '999999.jpg' has no row in"),
     (2, "../000002.jpg 0", "list_eval_partition.txt:2: image '../000002.jpg' has no row in")],
)  # fmt: skip
def test_celeba_partition_errors_name_the_line(tmp_path, line, text, needle):
    root = label_sources.write_celeba(tmp_path / "celeba")
    replace_line(root / "Eval" / "list_eval_partition.txt", line, text)
    with refused(needle):
        celeba.load_split(root, "train")


def test_celeba_paths_stay_inside_and_images_must_exist(tmp_path):
    root = label_sources.write_celeba(tmp_path / "celeba")
    attributes = root / "Anno" / "list_attr_celeba.txt"
    attributes.write_text(attributes.read_text().replace("000002.jpg", "../000002.jpg"))
    replace_line(root / "Eval" / "list_eval_partition.txt", 2, "../000002.jpg 0")
    with refused("list_eval_partition.txt:2: path '../000002.jpg' escapes its root folder"):
        celeba.load_split(root, "train")
    root = label_sources.write_celeba(tmp_path / "again")
    (root / "Img" / "img_align_celeba" / "000004.jpg").unlink()
    assert len(celeba.load_split(root, "train").records) == 4  # another split's image is not needed
    with refused("list_eval_partition.txt:4: image '000004.jpg' not found in"):
        celeba.load_split(root, "val")


def test_celeba_missing_files_are_named_with_their_official_places(tmp_path):
    root = label_sources.write_celeba(tmp_path / "celeba")
    (root / "Anno" / "list_attr_celeba.txt").unlink()
    with refused("no attribute file (expected Anno/list_attr_celeba.txt or list_attr_celeba.txt)"):
        celeba.load_split(root, "train")
    with refused("split 'valid' is not one of train, val, test"):
        celeba.load_split(root, "valid")


# RAF-DB


def test_rafdb_expressions_and_the_split_in_the_file_name(tmp_path):
    root = label_sources.write_rafdb(tmp_path / "raf")
    image_root, train, skipped = rafdb.load_split(root, "train")
    assert image_root == root / "Image" / "aligned" and skipped == {}
    assert [r.labels["expression"] for r in train[:7]] == list(rafdb.EXPRESSIONS)
    assert train[0].file == "train_00001_aligned.jpg" and train[0].labels == {"expression": "Surprise"}
    test = rafdb.load_split(root, "test").records
    assert [(r.file, r.labels["expression"]) for r in test[:2]] == [
        ("test_0001_aligned.jpg", "Neutral"), ("test_0002_aligned.jpg", "Surprise"),
    ]  # fmt: skip
    assert len(train) == len(label_sources.RAFDB_LABELS["train"]) and {r.split for r in test} == {"test"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [("train_00002.jpg 8",
      "list_patition_label.txt:2: label '8' is not one of 1 Surprise, 2 Fear, 3 Disgust, 4 Happiness, "
      "5 Sadness, 6 Anger, 7 Neutral"),
     ("train_00002.jpg 0", "list_patition_label.txt:2: label '0' is not one of 1 Surprise"),
     ("train_00002.jpg Happiness", "list_patition_label.txt:2: label 'Happiness' is not one of"),
     ("valid_00002.jpg 4", "list_patition_label.txt:2: image 'valid_00002.jpg' is not named train_NNNNN.jpg"),
     ("../train_00002.jpg 4", "list_patition_label.txt:2: image '../train_00002.jpg' is not named"),
     ("train_00001.jpg 4",
      "list_patition_label.txt:2: image 'train_00001.jpg' is listed twice (first on line 1)"),
     ("train_00002.jpg 4 extra", "list_patition_label.txt:2: expected `<image> <label>`")],
)  # fmt: skip
def test_rafdb_label_file_errors_name_the_line(tmp_path, text, needle):
    root = label_sources.write_rafdb(tmp_path / "raf")
    replace_line(root / "EmoLabel" / "list_patition_label.txt", 2, text)
    with refused(needle) as error:
        rafdb.load_split(root, "test")  # any line of the file is checked, whichever split is read
    assert one_line(error).startswith(str(root / "EmoLabel" / "list_patition_label.txt"))


def test_line_numbers_count_line_ends_only(tmp_path):
    root = label_sources.write_rafdb(tmp_path / "raf")
    path = root / "EmoLabel" / "list_patition_label.txt"
    lines = path.read_text().splitlines()
    lines[0] += "\x0c"  # a stray form feed is no line end
    lines[2] = "train_00003.jpg 9"
    path.write_bytes("\r\n".join(lines).encode() + b"\r\n")
    with refused("list_patition_label.txt:3: label '9' is not one of"):
        rafdb.load_split(root, "train")


def test_rafdb_missing_aligned_image_or_layout(tmp_path):
    root = label_sources.write_rafdb(tmp_path / "raf")
    (root / "Image" / "aligned" / "test_0003_aligned.jpg").unlink()
    assert len(rafdb.load_split(root, "train").records) == 9
    with refused("list_patition_label.txt:12: image 'test_0003_aligned.jpg' not found in"):
        rafdb.load_split(root, "test")
    shutil.rmtree(root / "Image")
    with refused("no aligned image folder (expected Image/aligned)"):
        rafdb.load_split(root, "train")
    with refused("no label file (expected EmoLabel/list_patition_label.txt)"):
        rafdb.load_split(tmp_path, "train")


# AffectNet


def affectnet_list(root, split="train"):
    return root / "Manually_Annotated_file_lists" / affectnet.LISTS[split]


def test_affectnet_emotions_are_read_and_the_others_skipped_and_counted(tmp_path):
    root = label_sources.write_affectnet(tmp_path / "affectnet")
    image_root, records, skipped = affectnet.load_split(root, "train")
    assert image_root == root / "Manually_Annotated_Images"
    assert [r.labels["expression"] for r in records] == [*affectnet.EXPRESSIONS, "Happy"]
    assert {reason: len(files) for reason, files in skipped.items()} == {
        "expression 8 None: not an emotion": 1, "expression 9 Uncertain: not an emotion": 1,
        "expression 10 No-Face: not an emotion": 1,
    }  # fmt: skip
    first = records[0]
    assert (image_root / first.file).is_file() and re.fullmatch(r"\d+/[0-9a-f]{56}\.jpg", first.file)
    _, _, width, height = first.labels["face_box"]
    assert (
        width == height == 224 and -1 <= first.labels["valence"] <= 1 and -1 <= first.labels["arousal"] <= 1
    )
    val = affectnet.load_split(root, "val")
    assert [r.labels["expression"] for r in val.records] == ["Surprise", "Neutral", "Contempt", "Sad"]
    # a skipped row's image is never looked for
    for file in [file for files in skipped.values() for file in files]:
        (image_root / file).unlink()
    assert len(affectnet.load_split(root, "train").records) == 9


def test_affectnet_other_places_of_the_lists_and_images(tmp_path):
    root = label_sources.write_affectnet(tmp_path / "affectnet")
    (root / "Manually_Annotated").mkdir()
    (root / "Manually_Annotated_Images").rename(root / "Manually_Annotated" / "Manually_Annotated_Images")
    affectnet_list(root, "val").rename(root / "validation.csv")
    loaded = affectnet.load_split(root, "val")
    assert loaded.image_root == root / "Manually_Annotated" / "Manually_Annotated_Images"
    assert len(loaded.records) == 4


def replace_field(path, line, column, value):
    lines = path.read_text().splitlines()
    fields = lines[line - 1].split(",")
    fields[affectnet.COLUMNS.index(column)] = value
    replace_line(path, line, ",".join(fields))


@pytest.mark.parametrize(
    ("column", "value", "needle"),
    [("expression", "11", "training.csv:3: expression '11' is not one of 0 Neutral, 1 Happy, 2 Sad"),
     ("expression", "happy", "training.csv:3: expression 'happy' is not one of"),
     ("face_x", "12.5", "training.csv:3: face_x '12.5' is not a whole number"),
     ("valence", "high", "training.csv:3: valence 'high' is not a number"),
     ("subDirectory_filePath", "100/missing.jpg", "training.csv:3: image '100/missing.jpg' not found in"),
     ("subDirectory_filePath", "../../secret.jpg",
      "training.csv:3: path '../../secret.jpg' escapes its root")],
)  # fmt: skip
def test_affectnet_row_errors_name_the_line(tmp_path, column, value, needle):
    root = label_sources.write_affectnet(tmp_path / "affectnet")
    replace_field(affectnet_list(root), 3, column, value)
    with refused(needle) as error:
        affectnet.load_split(root, "train")
    assert one_line(error).startswith(str(affectnet_list(root)))


def test_affectnet_header_width_and_duplicates(tmp_path):
    root = label_sources.write_affectnet(tmp_path / "affectnet")
    path = affectnet_list(root)
    lines = path.read_text().splitlines()
    replace_line(path, 4, lines[1])
    with refused("training.csv:4: image '" + lines[1].split(",")[0] + "' is listed twice (first on line 2)"):
        affectnet.load_split(root, "train")
    replace_line(path, 4, lines[3] + ",0.5")
    with refused("training.csv:4: 10 columns, expected 9"):
        affectnet.load_split(root, "train")
    replace_line(path, 1, lines[0].replace("expression", "emotion"))
    with refused("training.csv:1: not an AffectNet list (expected the header subDirectory_filePath,face_x"):
        affectnet.load_split(root, "train")
    path.write_text(lines[0] + "\n" + "\n".join(line for line in lines[1:] if ",8," in line) + "\n")
    with refused("training.csv: no row with an emotion"):
        affectnet.load_split(root, "train")
    affectnet_list(root, "val").unlink()
    with refused("no val list (expected Manually_Annotated_file_lists/validation.csv or validation.csv)"):
        affectnet.load_split(root, "val")


# the registry, FairFace included


def test_registry_names_every_source_and_reads_fairface_as_before():
    assert list(registry.SOURCES) == ["fairface", "utkface", "celeba", "rafdb", "affectnet"]
    image_root, records, skipped = registry.load(registry.get("fairface"), SAMPLE_FACES, "val")
    assert (image_root, records, skipped) == (*fairface.load_split(SAMPLE_FACES, "val"), {})
    assert registry.get("fairface").questions == items.FAIRFACE


def test_registry_refusals(tmp_path):
    with refused("unknown source 'ffhq' (choose from fairface, utkface, celeba, rafdb, affectnet)"):
        registry.get("ffhq")
    with refused("--split val: UTKFace has no such split (one of all)"):
        registry.load(registry.get("utkface"), tmp_path, "val")
    with refused(
        "--source rafdb needs --root, the folder holding EmoLabel/list_patition_label.txt and Image/"
    ):
        registry.root_of(registry.get("rafdb"), None, SAMPLE_FACES)
    assert registry.root_of(registry.get("fairface"), None, SAMPLE_FACES) == SAMPLE_FACES


# short-answer and multiple-choice items of each source


def source_items(source, record):
    kinds = ("short", "mcq")
    found = items.for_face(record, (), kinds, source.questions)
    return {
        item.key: (item.question, items.label_answer(record, item.key, source.questions)) for item in found
    }


def mcq_options(question):
    return [line[4:] for line in question.splitlines()[2:]]


@pytest.mark.parametrize(
    ("name", "split", "writer"),
    [("utkface", "all", label_sources.write_utkface), ("celeba", "train", label_sources.write_celeba),
     ("rafdb", "train", label_sources.write_rafdb), ("affectnet", "train", label_sources.write_affectnet)],
)  # fmt: skip
def test_every_source_gives_short_and_mcq_items_answered_with_its_labels(tmp_path, name, split, writer):
    source = registry.get(name)
    root = writer(tmp_path / name)
    _, records, _ = registry.load(source, root, split)
    keys = [f"{kind}:{q.key}" for kind in ("short", "mcq") for q in source.questions]
    for record in records:
        found = source_items(source, record)
        assert list(found) == keys
        for question in source.questions:
            answer = question.value(record.labels)
            short, mcq_item = found[f"short:{question.key}"], found[f"mcq:{question.key}"]
            assert short == (question.question, answer)
            options = mcq_options(mcq_item[0])
            assert mcq_item[1] == answer and options.count(answer) == 1 and len(set(options)) == len(options)
            assert mcq_item[0].splitlines()[:2] == [question.question, items.INSTRUCTION]
            assert 2 <= len(options) <= len(mcq.LETTERS) and set(options) <= set(question.candidates(answer))


def test_source_answers_are_the_labels_as_the_source_spells_them(tmp_path):
    records = utkface.load_split(label_sources.write_utkface(tmp_path / "utk")).records
    record = next(record for record in records if record.labels["age"] == 116)
    assert record.labels == {"age": 116, "gender": "Female", "race": "Asian"}
    assert {key: answer for key, (_, answer) in source_items(registry.get("utkface"), record).items()} == {
        "short:gender": "Female", "short:age": "116", "short:race": "Asian",
        "mcq:gender": "Female", "mcq:age": "116", "mcq:race": "Asian",
    }  # fmt: skip
    attributes = celeba.Attributes(1 << celeba.INDEX["No_Beard"] | 1 << celeba.INDEX["Smiling"])
    record = SourceRecord("000001.jpg", attributes, "train")
    answers = {k: a for k, (_, a) in source_items(registry.get("celeba"), record).items() if "short" in k}
    assert answers == {
        "short:gender": "Female", "short:smiling": "Yes", "short:eyeglasses": "No", "short:hat": "No",
        "short:beard": "No", "short:mustache": "No", "short:bald": "No", "short:bangs": "No",
        "short:lipstick": "No",
    }  # fmt: skip
    assert dict(attributes)["No_Beard"] is True and len(attributes) == 40 and record.labels["Male"] is False


def test_utkface_age_options_are_ages_five_to_thirty_years_apart():
    for age in (0, 3, 40, 113, 116):
        record = SourceRecord(f"UTKFace/{age}_0_0_1.jpg", {"age": age, "gender": "Male"}, "all")
        options = [int(option) for option in items.mcq_options(record, "age", utkface.QUESTIONS)]
        assert len(options) == 4 and age in options and all(0 <= o <= 116 for o in options)
        assert all((o - age) % 5 == 0 and abs(o - age) <= 30 for o in options)
    positions = [
        items.mcq_options(SourceRecord(f"{n}.jpg", {"age": 50}, "all"), "age", utkface.QUESTIONS).index("50")
        for n in range(200)
    ]
    assert all(positions.count(p) > 20 for p in range(4))  # the answer is not always in one place

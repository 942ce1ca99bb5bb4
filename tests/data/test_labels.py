import argparse
import os
import re
import subprocess
import sys
from itertools import product
from pathlib import Path

import pytest

from facellm.common.cli import FaceLLMError
from facellm.data import items
from facellm.data.fairface import AGE_BINS, GENDERS, RACES, FaceRecord
from facellm.data.labels import answer, corpus_for_tokenizer, qa_pairs
from facellm.data.prompts import load_prompts, person_noun
from tests.support import REPO

ASPECTS = load_prompts().aspects


def test_eight_aspects_one_question_each():
    assert len(ASPECTS) == 8
    assert len({a.key for a in ASPECTS}) == 8
    assert len({a.question for a in ASPECTS}) == 8


def test_answers_are_grounded_in_the_labels_but_questions_are_not():
    record = FaceRecord(file="val/1.jpg", age="40-49", gender="Female", race="Latino_Hispanic")
    pairs = qa_pairs(record)
    assert len(pairs) == 8
    demographics = dict((a.key, ans) for a, _, ans in pairs)["demographics"]
    assert "40-49" in demographics and "female" in demographics and "Latino or Hispanic" in demographics
    for _, question, _ in pairs:
        for label in ("40-49", "Female", "Latino"):
            assert label not in question


def test_article_agrees_with_the_race_word():
    pairs = qa_pairs(FaceRecord("f", "20-29", "Male", "Indian"))
    assert "an Indian man" in pairs[0][2]
    assert "a White woman" in qa_pairs(FaceRecord("f", "20-29", "Female", "White"))[0][2]


def test_children_are_called_boy_or_girl():
    assert person_noun(FaceRecord("f", "3-9", "Male", "White")) == "boy"
    assert person_noun(FaceRecord("f", "3-9", "Female", "White")) == "girl"
    assert person_noun(FaceRecord("f", "30-39", "Female", "White")) == "woman"


def test_tokenizer_corpus_covers_every_label_combination():
    corpus = "\n".join(corpus_for_tokenizer())
    for age, gender, race in product(AGE_BINS, GENDERS, RACES):
        assert qa_pairs(FaceRecord("f", age, gender, race))[0][2] in corpus


# short-answer and multiple-choice items (facellm.data.items)

LABEL_VALUES = (*AGE_BINS, *GENDERS, *RACES)
ATTRIBUTES = ("gender", "age", "race")
EVERY_FACE = [
    FaceRecord(f"val/{n}.jpg", *labels) for n, labels in enumerate(product(AGE_BINS, GENDERS, RACES))
]


def label_items(face, kinds=("short", "mcq")):
    return {item.key: (item.question, answer(item, face)) for item in items.for_face(face, ASPECTS, kinds)}


def mcq_parts(question):
    """(question line, instruction line, [(letter, option)]) of an mcq item's text."""
    assert question.endswith("\n") and "\n\n" not in question
    first, instruction, *lines = question.removesuffix("\n").split("\n")
    options = []
    for line in lines:
        assert line[0] == "(" and line[2:4] == ") ", line
        options.append((line[1], line[4:]))
    return first, instruction, options


def test_item_kinds_open_short_mcq_in_a_fixed_order():
    face = EVERY_FACE[0]
    assert [a.key for a in items.for_face(face, ASPECTS, ("open",))] == [a.key for a in ASPECTS]
    everything = items.for_face(face, ASPECTS, items.KINDS)
    assert [a.key for a in everything] == [a.key for a in ASPECTS] + [
        "short:gender", "short:age", "short:race", "mcq:gender", "mcq:age", "mcq:race",
    ]  # fmt: skip
    assert items.keys(ASPECTS, ("short", "mcq")) == [a.key for a in everything][8:]
    assert not any(items.is_label_item(a.key) for a in ASPECTS)


def test_short_items_answer_with_the_label_as_fairface_spells_it():
    for face in EVERY_FACE:
        short = label_items(face, ("short",))
        assert list(short) == ["short:gender", "short:age", "short:race"]
        assert [ans for _, ans in short.values()] == [face.gender, face.age, face.race]
        for question, _ in short.values():
            assert question == items.QUESTIONS[question_attribute(question)]
            assert not any(value.lower() in question.lower() for value in LABEL_VALUES), question
    assert label_items(FaceRecord("f", "more than 70", "Female", "Latino_Hispanic"), ("short",)) == {
        "short:gender": ("What is the perceived gender of the person in this image?", "Female"),
        "short:age": ("Which age range does this person appear to be in?", "more than 70"),
        "short:race": ("Which race group does this person appear to belong to?", "Latino_Hispanic"),
    }


def question_attribute(question):
    return next(attribute for attribute, text in items.QUESTIONS.items() if text == question)


def test_mcq_items_offer_the_label_once_among_other_values_and_answer_with_its_text():
    sizes = {"gender": 2, "age": 4, "race": 4}
    vocabularies = {"gender": GENDERS, "age": AGE_BINS, "race": RACES}
    for face in EVERY_FACE:
        for attribute in ATTRIBUTES:
            question, text = label_items(face, ("mcq",))[f"mcq:{attribute}"]
            first, instruction, options = mcq_parts(question)
            assert (first, instruction) == (items.QUESTIONS[attribute], items.INSTRUCTION)
            assert [letter for letter, _ in options] == list("ABCD"[: sizes[attribute]])
            values = [value for _, value in options]
            assert text == getattr(face, attribute) and values.count(text) == 1
            assert len(set(values)) == len(values) and set(values) <= set(vocabularies[attribute])
            # the image's labels appear in its question only as options
            assert not any(value.lower() in f"{first}\n{instruction}".lower() for value in LABEL_VALUES)


def test_mcq_text_is_the_evaluation_prompt_of_the_same_question():
    from facellm.eval.facexbench import Task, prompt_text

    face = FaceRecord("val/4.jpg", "50-59", "Female", "East Asian")
    for attribute in ATTRIBUTES:
        question = {
            "question_text": items.QUESTIONS[attribute],
            "options": items.mcq_options(face, attribute),
        }
        task = Task("t", Path("t.json"), {"postpend_text": items.INSTRUCTION}, {"1": question})
        assert label_items(face, ("mcq",))[f"mcq:{attribute}"][0] == prompt_text(task, "1")
    assert label_items(face, ("mcq",))["mcq:race"][0] == (
        "Which race group does this person appear to belong to?\n"
        "Answer with the text of the correct option.\n"
        "(A) East Asian\n(B) Latino_Hispanic\n(C) White\n(D) Black\n"
    )  # pinned: a change here changes every dataset written before it


def test_mcq_options_are_drawn_per_image_and_attribute():
    faces = [FaceRecord(f"val/{n}.jpg", "30-39", "Male", "Indian") for n in range(400)]
    for attribute, size in (("gender", 2), ("age", 4), ("race", 4)):
        positions = [items.mcq_options(face, attribute).index(getattr(face, attribute)) for face in faces]
        assert all(positions.count(p) > 400 / size / 2 for p in range(size)), (attribute, positions)
    assert len({tuple(sorted(items.mcq_options(face, "age"))) for face in faces}) > 20  # distractors vary
    # the same image and attribute always give the same options, whatever the other labels
    assert items.mcq_options(faces[0], "age") == items.mcq_options(
        FaceRecord("val/0.jpg", "30-39", "X", "Y"), "age"
    )


def test_mcq_options_do_not_depend_on_python_hash_randomisation():
    code = (
        "from facellm.data.items import mcq_options; from facellm.data.fairface import FaceRecord; "
        "print([mcq_options(FaceRecord(f'val/{n}.jpg', '0-2', 'Male', 'Black'), 'race') for n in range(5)])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed}, cwd=REPO,
            capture_output=True, text=True, check=True,
        ).stdout
        for seed in ("1", "2")
    }  # fmt: skip
    assert len(outputs) == 1
    here = [items.mcq_options(FaceRecord(f"val/{n}.jpg", "0-2", "Male", "Black"), "race") for n in range(5)]
    assert outputs == {f"{here}\n"}


def test_tokenizer_corpus_has_every_item_text_and_option_line():
    corpus = set(corpus_for_tokenizer())
    assert set(items.QUESTIONS.values()) | {items.INSTRUCTION} <= corpus
    for value in LABEL_VALUES:
        assert {f"({letter}) {value}" for letter in "ABCD"} <= corpus, value
    text = "\n".join(corpus)
    face = FaceRecord("", "more than 70", "Female", "Latino_Hispanic")
    for question, _ in label_items(face).values():
        assert question in text


@pytest.mark.parametrize(
    ("given", "kinds"),
    [("open", ("open",)), ("mcq,open", ("open", "mcq")), (" short , mcq ", ("short", "mcq")),
     ("open,short,mcq,open", ("open", "short", "mcq"))],
)  # fmt: skip
def test_item_kinds_are_read_in_the_fixed_order(given, kinds):
    assert items.parse_kinds(given) == kinds
    assert items.item_list(given) == ",".join(kinds)


@pytest.mark.parametrize(
    ("given", "needle"),
    [("", "no item kind"), (" , ", "no item kind"), ("open,,mcq", "empty item kind in 'open,,mcq'"),
     ("open,bogus", "unknown item kind 'bogus'"), ("MCQ", "unknown item kind 'MCQ'")],
)  # fmt: skip
def test_unknown_or_missing_item_kinds_are_refused_by_name(given, needle):
    with pytest.raises(FaceLLMError, match=f"^--items {re.escape(repr(given))}: .*{re.escape(needle)}"):
        items.parse_kinds(given)
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(needle)):
        items.item_list(given)

from itertools import product

from facellm.data.fairface import AGE_BINS, GENDERS, RACES, FaceRecord
from facellm.data.labels import corpus_for_tokenizer, qa_pairs
from facellm.data.prompts import load_prompts, person_noun

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

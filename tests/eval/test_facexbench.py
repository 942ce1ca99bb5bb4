import json

import pytest

from facellm.common.cli import FaceLLMError
from facellm.eval.facexbench import (
    extract_letter,
    image_files,
    load_benchmark,
    load_task,
    prompt_text,
    vlmeval_message,
)
from facellm.testing.sample_benchmark import build
from tests.support import SAMPLE_FACES, SHARED_FACEXBENCH

OPTIONS = ["fear", "sad", "neutral", "anger"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return build(SAMPLE_FACES, tmp_path_factory.mktemp("fxb"), per_task=3)


@pytest.mark.parametrize(
    ("prediction", "letter"),
    [
        ("B", "B"),
        ("b", "B"),
        ("(C)", "C"),
        ("D.", "D"),
        ("C. neutral", "C"),
        ("The answer is D", "D"),
        ("A man with a beard, so the answer is D.", "D"),
        ("Answer: (A)", "A"),
        ("Option C", "C"),
        ("sad", "B"),
        ("Neutral.", "C"),
        ("A man looking sideways", None),
        ("", None),
        ("I am not sure", None),
        ("The answer is a man", None),
        ("My answer is a happy face", None),
        ("The answer: A man", None),
        ("The answer is A because of the eyes", "A"),
        ("C\nExplanation: the mouth is neutral", "C"),
        ("(A) and (B)", None),
        ("B and C", None),
        ("Answer: C.\nThe option A is wrong", "C"),
        ("In option A the face is sad; answer: B", "B"),
        ("**B**", "B"),
        ("Answer: **B**", "B"),
        ("Answer - C", "C"),
        ("Answer:B", "B"),
        ("\\boxed{C}", "C"),
        ("I think it's C", "C"),
        ("D) anger", "D"),
        ("The correct option is (B) sad", "B"),
        ("(a)", "A"),
        ("a", "A"),
        ("A.", "A"),
        # lower case after a keyword or at the start of the first line; the article never
        ("answer: d", "D"),
        ("Choice: c", "C"),
        ("b) sad", "B"),
        ("The answer is a.", "A"),
        ("a sad face", None),
        ("A sad person", None),
        ("A fear-driven look", None),
        ("A is correct", "A"),
        ("A, because the brows are raised", "A"),
        # an option's text after "answer"
        ("The answer is sad.", "B"),
        ("answer: Neutral", "C"),
        # letters the authors' first-match regex would misread
        ("Options A and B are wrong, the answer is C", "C"),
        ("A person with a frown, I'd say (D).", "D"),
        ("The image shows a man. Answer: B", "B"),
        ("The answer is clear: B", "B"),
        ("(A) fear\n(B) sad\n(C) neutral\n(D) anger", None),  # the options repeated, none chosen
        ("<answer>B</answer>", "B"),
        ("THE ANSWER IS D", "D"),
        ("The person looks sad.", None),  # no option text is the whole answer: not guessed
        # hedges that no rule reads (the others: test_hedged_or_negated_answers_are_unparsed)
        ("A and B", None),
        ("either A or C", None),
        ("(A) or (B)", None),
        ("I pick (B), or maybe (C)", None),
        ("A isn't correct", None),
        # letters listed or negated beside the one that answers
        ("The answer is A, not B", "A"),
        ("The answer is D, not A or B", "D"),
        ("Options A and B are wrong, the answer is C", "C"),
        ("The answer is C, A and B are wrong", "C"),
        ("The answer is B. A is wrong.", "B"),
        ("Not sure. The answer is B", "B"),
        ("I'm not sure, but I think B", "B"),
        ("The face is not sad so C", "C"),
        ("A. Not the others", "A"),
        ("B and a sad mouth", "B"),
        ("The answer is B or something close", "B"),
    ],
)
def test_extract_letter(prediction, letter):
    assert extract_letter(prediction, OPTIONS) == letter


@pytest.mark.parametrize(
    "prediction",
    [
        # several candidates
        "The answer is A or B",
        "Answer: A/B",
        "Option A or B",
        "The answer is a or b",
        "Neither A nor B",
        # a negated option
        "Not A",
        "not (A)",
        "Not (A)",
        "The answer is not A",
        "The answer is not (A)",
        "It isn't B",
        "The answer cannot be C",
        "All except D",
        "not option A",
        "The correct option is not A",
        "I wouldn't pick A",
        "A is not right",
        "A is wrong",
        "B can't be",
    ],
)
def test_hedged_or_negated_answers_are_unparsed(prediction):
    assert extract_letter(prediction, OPTIONS) is None


def test_extract_letter_integer_and_range_options():
    assert extract_letter("2", [0, 1, 2, 3]) == "C"
    assert extract_letter("2.", [0, 1, 2, 3]) == "C"
    assert extract_letter("(B)", [0, 1, 2, 3]) == "B"
    assert extract_letter("The answer is 2", [0, 1, 2, 3]) == "C"
    assert extract_letter("There are 2 people", [0, 1, 2, 3]) is None
    assert extract_letter("30", [20, 30, 40, 50]) == "B"
    assert extract_letter("1", [20, 30, 40, 50]) is None
    ranges = ["22 to 26", "27 to 31", "32 to 36", "37 to 41"]
    assert extract_letter("The answer is 27 to 31", ranges) == "B"
    assert extract_letter("B. 27 to 31", ranges) == "B"


def test_extract_letter_ignores_letters_beyond_the_options():
    assert extract_letter("D", ["x", "y", "z"]) is None


def test_prompt_layout(bench):
    task = load_task(bench / "sample_single_mcq_gender.json")
    question = task.questions["1"]
    options = "".join(
        f"({letter}) {option}\n" for letter, option in zip("ABCD", question["options"], strict=True)
    )
    # the authors' layout: every part ends with a newline; the task instruction only when asked for
    assert prompt_text(task, "1") == f"{question['question_text']}\n{task.header['postpend_text']}\n{options}"
    assert prompt_text(task, "1", prepend=True) == f"{task.header['prepend_text']}\n" + prompt_text(task, "1")


def test_message_has_absolute_images_first(bench):
    task = load_task(bench / "sample_multiple_mcq_race.json")
    message = vlmeval_message(task, "1", bench)
    assert [m["type"] for m in message] == ["image", "image", "image", "text"]
    assert all(m["value"].startswith(str(bench.absolute())) for m in message[:3])


def test_missing_image_is_an_error_never_text(bench, tmp_path):
    data = json.loads((bench / "sample_single_mcq_age.json").read_text())
    data["questions"]["1"]["image_paths"] = ["images/nowhere/question_1.png"]
    (tmp_path / "t.json").write_text(json.dumps(data))
    task = load_task(tmp_path / "t.json")
    with pytest.raises(FaceLLMError, match=r"image images/nowhere/question_1\.png not found"):
        image_files(task, "1", tmp_path)


def test_malformed_files(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(FaceLLMError, match=r"a\.json: not a readable FaceXBench JSON"):
        load_task(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({"category": "x"}))
    with pytest.raises(FaceLLMError, match=r"b\.json: not a FaceXBench question file"):
        load_task(tmp_path / "b.json")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FaceLLMError, match="no FaceXBench question files"):
        load_benchmark(empty)


@pytest.mark.parametrize(
    "key", ["options", "correct_answer_option", "answer", "question_text", "image_paths"]
)
def test_question_without_a_key(bench, tmp_path, key):
    data = json.loads((bench / "sample_single_mcq_age.json").read_text())
    del data["questions"]["2"][key]
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(FaceLLMError, match=f"t.json: question 2 lacks {key}"):
        load_task(tmp_path / "t.json")


@pytest.mark.parametrize(
    ("options", "message"),
    [(["x"], "options must be a list of 2 to 4"), (list("abcde"), "options must be a list of 2 to 4"),
     (["x", None], "options must be texts or numbers"), ("abcd", "options must be a list")],
)  # fmt: skip
def test_options_are_checked(bench, tmp_path, options, message):
    data = json.loads((bench / "sample_single_mcq_age.json").read_text())
    data["questions"]["1"]["options"] = options
    data["questions"]["1"]["correct_answer_option"] = "A"
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(FaceLLMError, match=f"question 1: {message}"):
        load_task(tmp_path / "t.json")


@pytest.mark.parametrize("bad", ["", "AB", "E", ["A"], None])
def test_answer_key_must_be_one_valid_letter(bench, tmp_path, bad):
    data = json.loads((bench / "sample_single_mcq_age.json").read_text())
    data["questions"]["1"]["correct_answer_option"] = bad
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(FaceLLMError, match=r"question 1: correct_answer_option .* is not a valid letter"):
        load_task(tmp_path / "t.json")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("questions", [], "'questions' must be"), ("image_paths", [None], "image_paths must be a list")],
)
def test_malformed_question_structure(bench, tmp_path, field, value, message):
    data = json.loads((bench / "sample_single_mcq_age.json").read_text())
    if field == "questions":
        data["questions"] = value
    else:
        data["questions"]["1"][field] = value
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(FaceLLMError, match=message):
        load_task(tmp_path / "t.json")


@pytest.mark.skipif(not SHARED_FACEXBENCH.is_dir(), reason="real FaceXBench question files not available")
def test_real_facexbench_files_load():
    tasks = load_benchmark(SHARED_FACEXBENCH)
    assert len(tasks) == 48
    assert sum(len(t.questions) for t in tasks) == 5000
    tools = next(t for t in tasks if t.name == "tools_retrieval")
    assert prompt_text(tools, "1").startswith(tools.header["context"])


@pytest.mark.parametrize("per_task", [0, 9])
def test_sample_benchmark_refuses_impossible_sizes(tmp_path, per_task):
    with pytest.raises(FaceLLMError, match=f"allow 1 to 8 questions per task, not {per_task}"):
        build(SAMPLE_FACES, tmp_path, per_task=per_task)

"""The multiple-choice layout shared by the FaceXBench prompt and the FairFaceGPT mcq items."""

from pathlib import Path

from facellm.common import mcq
from facellm.eval import facexbench
from facellm.eval.facexbench import Task, prompt_text


def test_lines_then_lettered_options_each_ending_with_a_newline():
    text = mcq.prompt(["Which one?", "Answer with the text."], ["Male", "Female"])
    assert text == "Which one?\nAnswer with the text.\n(A) Male\n(B) Female\n"


def test_option_lines_letter_in_order_and_stop_at_the_last_letter():
    assert mcq.option_lines(["a", 2, "c", "d"]) == ["(A) a", "(B) 2", "(C) c", "(D) d"]
    assert mcq.option_lines(["a", "b", "c", "d", "e"])[-1] == "(D) d"  # as the evaluation always did
    assert mcq.option_line("C", "more than 70") == "(C) more than 70"


def test_the_evaluation_keeps_its_letters_and_its_prompt():
    assert facexbench.LETTERS == mcq.LETTERS == "ABCD"
    header = {"context": "Tool output.", "prepend_text": "You are an expert.", "postpend_text": "Reply A-D."}
    question = {"question_text": "How old?", "options": ["20-29", 35, "40-49", "50-59"]}
    task = Task("t", Path("t.json"), header, {"1": question})
    # the text prompt_text built before the layout moved to facellm.common.mcq
    before = "Tool output.\nHow old?\nReply A-D.\n(A) 20-29\n(B) 35\n(C) 40-49\n(D) 50-59\n"
    assert prompt_text(task, "1") == before
    assert prompt_text(task, "1", prepend=True) == before.replace("\nHow", "\nYou are an expert.\nHow")

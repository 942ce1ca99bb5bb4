"""Open items for every label source: its aspects and hint templates (data/prompts/<source>/), the offline
answers of the labels backend, and the live backend against the local endpoint with the guarantees of the
FairFace path (the hint reaches the LLM and never the data, resume without duplicates, the key redacted)."""

import json
import re

import pytest

from facellm.data import labels, reports
from facellm.data.generate import main
from facellm.data.prompts import Aspect
from facellm.data.sources import registry
from facellm.testing.local_endpoint import LocalEndpoint
from tests.data.support import API_KEY, dataset, ledger_lines
from tests.data.test_generate_sources import SOURCES, argv, turns
from tests.support import run_main

OTHERS = [name for name in registry.SOURCES if name != registry.DEFAULT]


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setattr(reports, "_plot", lambda tables, path: None)  # drawn in test_generate_sources


def loaded(name, tmp_path):
    writer, split = SOURCES[name][:2]
    source = registry.get(name)
    root = writer(tmp_path / name)
    image_root, records, _ = registry.load(source, root, split)
    return source, root, image_root, records


def grounded(name, record, answers: dict[str, str]) -> None:
    """The open answers of RECORD (aspect key -> text) say what its labels say."""
    values = record.labels
    if name == "utkface":
        age = int(record.file.rsplit("/", 1)[-1].split("_")[0])
        assert re.search(rf"\b{age} years\b", answers["demographics"]), answers["demographics"]
        assert ("under one year old" if age == 0 else f"{age} year") in answers["age"]
        assert f"gender: {values['gender'].lower()};" in answers["demographics"]
    elif name == "celeba":
        assert ("eyeglasses" in answers["accessories"].replace("no eyeglasses", "")) == values["Eyeglasses"]
        assert answers["expression"].startswith(
            "The person is smiling" if values["Smiling"] else "The person is not"
        )
        assert ("woman" in answers["attributes"]) != values["Male"]
        assert "ttractive" not in " ".join(answers.values())  # a judgement, never stated
    else:
        expression = str(values["expression"])
        shown = (
            "a neutral expression"
            if expression == "Neutral"
            else {"Happy": "happiness", "Sad": "sadness"}.get(expression, expression.lower())
        )
        assert answers["expression"] == f"The face shows {shown}."
        if name == "affectnet":
            valence = float(values["valence"])
            pleasant = answers["valence_arousal"]
            assert ("neither" in pleasant) == (abs(valence) <= 0.2)
            assert ("unpleasant" in pleasant.replace("neither pleasant nor unpleasant", "")) == (
                valence < -0.2
            )


@pytest.mark.parametrize("name", OTHERS)
def test_every_template_fills_for_every_label_of_the_fixtures(tmp_path, name):
    source, _, _, records = loaded(name, tmp_path)
    prompts = source.prompts()
    assert prompts.aspects and all(aspect.offline for aspect in prompts.aspects)
    assert prompts.digest != registry.get("fairface").prompts().digest
    for record in records:
        texts = [prompts.question_text(record, aspect) for aspect in prompts.aspects]
        texts.append(prompts.all_questions_text(record, list(prompts.aspects)))
        texts += [labels.answer(aspect, record, source.questions, prompts) for aspect in prompts.aspects]
        assert not any("{" in text or "}" in text for text in texts[: -1 - len(prompts.aspects)])
        assert all(text.strip() for text in texts)


@pytest.mark.parametrize("name", OTHERS)
def test_labels_backend_writes_grounded_open_answers_for_every_source(tmp_path, capsys, name):
    source, root, _, records = loaded(name, tmp_path)
    out = tmp_path / "out"
    result = run_main(main, argv(name, root, out, "--backend", "labels", "--items", "open,short,mcq"), capsys)
    assert result.returncode == 0, result.stderr
    aspects = source.prompts().aspects
    per_image = len(aspects) + 2 * len(source.questions)
    written = dataset(out)
    assert len(written) == len(records) * per_image
    for n, record in enumerate(records):
        mine = written[n * per_image : n * per_image + len(aspects)]
        assert [turns(r)[0] for r in mine] == [f"<image>\n{aspect.question}" for aspect in aspects]
        assert {r["images"][0] for r in mine} == {record.file}
        grounded(name, record, {aspect.key: turns(r)[1] for aspect, r in zip(aspects, mine, strict=True)})
    for record in written:  # the question is the bare question: no hint, no label
        assert "annotation" not in turns(record)[0].lower()
    assert json.loads((out / "run.json").read_text())["prompts"] == source.prompts().digest


def test_an_aspect_without_an_offline_answer_gets_the_labels_summary(tmp_path):
    source, _, _, records = loaded("rafdb", tmp_path)
    text = labels.answer(
        Aspect("lighting", "How is the light?"), records[0], source.questions, source.prompts()
    )
    summary = source.hint(records[0])["summary"]
    assert text == f"The image shows {summary}; the annotations available for this image say no more."


HINTS = {  # what the endpoint reports having been told, per source: the labels in the hint's words
    "utkface": lambda r: f"age {r.labels['age']} year" if r.labels["age"] else "age under one year old",
    "celeba": lambda r: "accessories " + registry.get("celeba").hint(r)["accessories"],
    "rafdb": lambda r: "face shows " + registry.get("rafdb").hint(r)["emotion"],
    "affectnet": lambda r: f"valence {r.labels['valence']:+.2f}",
}


@pytest.mark.parametrize(
    ("name", "mode"),
    [(n, "per-question") for n in OTHERS] + [("celeba", "per-image"), ("affectnet", "batch")],
)
def test_llm_backends_send_the_source_hint_and_store_the_bare_question(tmp_path, capsys, name, mode):
    source, root, _, records = loaded(name, tmp_path)
    out = tmp_path / "out"
    aspects = source.prompts().aspects
    how = ["--backend", "batch", "--poll-interval", "0.05"] if mode == "batch" else ["--mode", mode]
    with LocalEndpoint(api_key=API_KEY) as endpoint:
        result = run_main(main, argv(name, root, out, "--base-url", endpoint.base_url, *how), capsys)
        requests = endpoint.chat_requests()
    assert result.returncode == 0, result.stderr
    expected = {"per-question": len(aspects), "per-image": 1, "batch": 0}[mode]  # batch: no chat request
    assert len(requests) == len(records) * expected
    written = dataset(out)
    assert len(written) == len(records) * len(aspects)
    for n, record in enumerate(records):
        for aspect, item in zip(aspects, written[n * len(aspects) : (n + 1) * len(aspects)], strict=True):
            question, answer = turns(item)
            assert question == f"<image>\n{aspect.question}" and item["images"] == [record.file]
            assert HINTS[name](record) in answer, answer  # the hint reached the LLM ...
            assert "annotation" not in question.lower()  # ... not the data


@pytest.mark.parametrize("name", OTHERS)
def test_an_interrupted_live_run_resumes_without_duplicates_and_never_writes_the_key(tmp_path, capsys, name):
    source, root, _, records = loaded(name, tmp_path)
    aspects = source.prompts().aspects
    total = len(records) * len(aspects)
    out, reference = tmp_path / "out", tmp_path / "reference"
    # the key quoted back by a hostile endpoint, a 500 retried, then a 401 stops the run part of the way
    faults = ["echo-key", "500", *[None] * (total // 2), "401"]
    with LocalEndpoint(api_key=API_KEY, faults=faults) as endpoint:
        arguments = argv(name, root, out, "--base-url", endpoint.base_url, "--concurrency", "1")
        first = run_main(main, arguments, capsys)
        assert first.returncode != 0 and "re-run to resume" in first.stderr
        done_before = len(ledger_lines(out))
        assert 0 < done_before < total
        asked = len(endpoint.chat_requests())
        second = run_main(main, arguments, capsys)
        assert second.returncode == 0, second.stderr
        assert len(endpoint.chat_requests()) - asked == total - done_before  # nothing done is asked again
    with LocalEndpoint(api_key=API_KEY, faults=["echo-key"]) as endpoint:  # the same first answer
        arguments = argv(name, root, reference, "--base-url", endpoint.base_url, "--concurrency", "1")
        assert run_main(main, arguments, capsys).returncode == 0
    lines = ledger_lines(out)
    assert len(lines) == total == len({(line["image"], line["aspect"]) for line in lines})
    assert (out / "dataset.json").read_bytes() == (reference / "dataset.json").read_bytes()
    texts = [first.stdout, first.stderr, second.stdout, second.stderr]
    texts += [path.read_text(errors="replace") for path in out.rglob("*") if path.is_file()]
    assert "[redacted]" in "".join(texts) and not any(API_KEY in text for text in texts)

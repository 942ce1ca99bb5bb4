"""A FairFaceGPT run against the dry-run endpoint (facellm.testing.local_endpoint), as the README's dry run
makes one: answers that never carry the prompts' instructions, and a cost report that charges nothing."""

import json
import re
import string

import pytest

from facellm.data.prompts import DEFAULT_PROMPTS_DIR
from tests.data.support import API_KEY, ledger_lines, run
from tests.support import SAMPLE_FACES


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def instruction_fragments() -> list[str]:
    """Every sentence of the system prompt and the two user templates, cut at their {fields}: what the
    hidden instructions say, without the label values filled in around them. Pieces of one or two words
    (", race group ", ", age ") name a label, which an answer may repeat."""
    fragments = []
    for name in ("system.txt", "per_question.txt", "per_image.txt"):
        template = (DEFAULT_PROMPTS_DIR / name).read_text(encoding="utf-8")
        for sentence in re.split(r"(?<=[.:;?!])\s+|\n+", template):
            for literal, *_ in string.Formatter().parse(sentence):
                piece = literal.strip(" ,.")
                if len(piece.split()) >= 3:
                    fragments.append(piece)
    return fragments


def answers(out) -> dict[tuple[str, str], str]:
    return {(line["image"], line["aspect"]): line["answer"] for line in ledger_lines(out)}


@pytest.mark.parametrize("mode", ["per-question", "per-image"])
def test_dry_run_answers_never_repeat_the_prompt_instructions(tmp_path, mode):
    from facellm.testing.local_endpoint import LocalEndpoint

    fragments = instruction_fragments()
    assert any("do not mention that you were given an annotation" in f for f in fragments)
    with LocalEndpoint(api_key=API_KEY) as endpoint:
        run(endpoint, tmp_path / "first", limit=1, mode=mode)
        run(endpoint, tmp_path / "again", limit=1, mode=mode)
    first = answers(tmp_path / "first")
    assert len(first) == 8 and first == answers(tmp_path / "again")  # deterministic
    rows = (SAMPLE_FACES / "fairface_label_val.csv").read_text().splitlines()
    labels = {row.split(",")[0]: row.split(",") for row in rows}
    for (image, _aspect), answer in first.items():
        leaked = [fragment for fragment in fragments if fragment.lower() in answer.lower()]
        assert not leaked and "annotation" not in answer.lower(), answer
        assert f"perceived gender {labels[image][2].lower()}" in answer  # still grounded in the hint


def test_a_dry_run_costs_nothing_unless_a_price_table_names_its_model(tmp_path, monkeypatch):
    from facellm.testing.local_endpoint import LocalEndpoint

    out = tmp_path / "out"
    own = tmp_path / "prices.json"
    own.write_text(
        json.dumps({"models": {"gpt-4o-2024-11-20": {"input_per_million": 5, "output_per_million": 5}}})
    )
    with LocalEndpoint(api_key=API_KEY) as endpoint:
        run(endpoint, out, limit=1, mode="per-image")
        local = json.loads((out / "cost.json").read_text())
        run(endpoint, out, limit=1, mode="per-image", prices=own)  # nothing asked again, the report redone
        priced = json.loads((out / "cost.json").read_text())
        monkeypatch.setenv("OPENAI_BASE_URL", endpoint.base_url)  # the client's own way to the endpoint
        run(None, out, limit=1, mode="per-image")
        from_environment = json.loads((out / "cost.json").read_text())
    assert local["pricing"] == "local endpoint: no API cost" and local["usd"] is None
    assert local["prompt_tokens"] > 0 and local["completion_tokens"] > 0
    tokens = local["prompt_tokens"] + local["completion_tokens"]
    assert priced["pricing"] == "price table" and priced["usd"] == pytest.approx(5 * tokens / 1e6)
    assert from_environment["pricing"] == "local endpoint: no API cost"

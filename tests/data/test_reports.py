import json

import pytest
from PIL import Image

from facellm.common.cli import FaceLLMError
from facellm.data.fairface import FaceRecord
from facellm.data.reports import DEFAULT_PRICES, cost_report, fairness_report, load_prices

FACES = [
    FaceRecord("val/1.jpg", "20-29", "Male", "White"),
    FaceRecord("val/2.jpg", "3-9", "Female", "Black"),
]


def item(image, aspect, status="done", answer="a b c d", refusals=0, usage=(1000, 100)):
    return {
        "image": image,
        "aspect": aspect,
        "status": status,
        "answer": answer if status == "done" else None,
        "reason": None if status == "done" else "refusal",
        "refusals": refusals,
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]},
    }


def test_cost_from_the_price_table_with_batch_discount_and_projection(tmp_path):
    prices = load_prices(DEFAULT_PRICES)
    entries = [item("val/1.jpg", "a"), item("val/2.jpg", "a", usage=(3000, 300))]
    live = cost_report(entries, prices, "gpt-4o-2024-11-20", False, 2, 10954, tmp_path)
    # 4000 in x $2.5/M + 400 out x $10/M = $0.014
    assert live["usd"] == pytest.approx(0.014)
    assert live["usd_projected_for_split"] == pytest.approx(0.014 / 2 * 10954, abs=0.01)
    batch = cost_report(entries, prices, "gpt-4o-2024-11-20", True, 2, 10954, tmp_path)
    assert batch["usd"] == pytest.approx(0.007)
    assert "$0.0070" in (tmp_path / "cost_report.md").read_text()
    assert json.loads((tmp_path / "cost.json").read_text())["prompt_tokens"] == 4000


def test_unknown_model_has_no_price_but_still_counts_tokens(tmp_path):
    summary = cost_report(
        [item("val/1.jpg", "a")], load_prices(DEFAULT_PRICES), "my-vllm", False, 1, 1, tmp_path
    )
    assert summary["usd"] is None and summary["prompt_tokens"] == 1000
    assert "no entry for `my-vllm`" in (tmp_path / "cost_report.md").read_text()


def test_price_table_override_is_validated(tmp_path):
    bad = tmp_path / "prices.json"
    bad.write_text('{"models": {"m": {"input": 1}}}')
    with pytest.raises(FaceLLMError, match=r"prices\.json: expected an object"):
        load_prices(bad)


def test_fairness_groups_rates_and_plot(tmp_path):
    entries = {
        ("val/1.jpg", "demographics"): item(
            "val/1.jpg", "demographics", answer="A White man in his twenties."
        ),
        ("val/1.jpg", "describe"): item(
            "val/1.jpg", "describe", refusals=1, answer="one two three four five six"
        ),
        ("val/2.jpg", "demographics"): item("val/2.jpg", "demographics", status="failed", refusals=3),
        ("val/2.jpg", "describe"): item("val/2.jpg", "describe", answer="A girl."),
    }
    tables = fairness_report(FACES, entries, tmp_path)
    white = next(row for row in tables["race"] if row["race"] == "White")
    black = next(row for row in tables["race"] if row["race"] == "Black")
    assert (white["images"], white["qa_done"], white["qa_failed"]) == (1, 2, 0)
    assert white["mean_answer_words"] == pytest.approx((6 + 6) / 2)
    assert white["refusal_rate"] == 0.5 and white["failure_rate"] == 0.0
    assert white["race_named_in_demographics"] == 1.0
    assert black["failure_rate"] == 0.5 and black["race_named_in_demographics"] is None
    assert len(tables["age"]) == 9 and next(r for r in tables["age"] if r["age"] == "50-59")["images"] == 0
    report = (tmp_path / "fairness_report.md").read_text()
    assert "| White | 1 | 2 | 0 | 6.0 | 50.0% | 0.0% | 100.0% |" in report
    with Image.open(tmp_path / "fairness.png") as image:
        assert image.width > 500

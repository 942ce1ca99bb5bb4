import json

import pytest
from PIL import Image

from facellm.common.cli import FaceLLMError
from facellm.data.fairface import FaceRecord
from facellm.data.reports import (
    DEFAULT_PRICES,
    cost_report,
    fairness_figure,
    fairness_report,
    fairness_rows,
    is_local,
    load_prices,
)

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
        [item("val/1.jpg", "a")], load_prices(DEFAULT_PRICES), "my-vllm", False, 1, 1, tmp_path,
        endpoint="https://vlm.example.org/v1",
    )  # fmt: skip
    assert summary["usd"] is None and summary["prompt_tokens"] == 1000
    assert summary["pricing"] == "price unknown" and summary["usd_projected_for_split"] is None
    report = (tmp_path / "cost_report.md").read_text()
    assert "- price: price unknown (no entry for `my-vllm`" in report and "$" not in report


OPENAI_MODEL = "gpt-4o-2024-11-20"  # the default --model, in the bundled table


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8001/v1", "http://localhost:8000/v1", "http://[::1]:8000/v1", "http://127.0.0.2/v1",
     "http://0.0.0.0:8000/v1"],
)  # fmt: skip
def test_a_local_endpoint_costs_nothing_whatever_its_model_is_called(tmp_path, url):
    entries = [item("val/1.jpg", "a"), item("val/2.jpg", "a")]
    summary = cost_report(
        entries, load_prices(DEFAULT_PRICES), OPENAI_MODEL, False, 2, 10, tmp_path, endpoint=url
    )
    assert summary["usd"] is None and summary["usd_projected_for_split"] is None
    assert summary["pricing"] == "local endpoint: no API cost"
    assert (summary["prompt_tokens"], summary["completion_tokens"]) == (2000, 200)
    report = (tmp_path / "cost_report.md").read_text()
    assert "- price: local endpoint: no API cost" in report and "$" not in report
    assert json.loads((tmp_path / "cost.json").read_text())["pricing"] == "local endpoint: no API cost"


def test_a_price_table_of_the_user_prices_a_local_endpoint_only_for_the_models_it_names(tmp_path):
    own = {"models": {"my-proxy": {"input_per_million": 1.0, "output_per_million": 2.0}}}
    local = "http://127.0.0.1:4000/v1"
    proxied = cost_report([item("val/1.jpg", "a")], own, "my-proxy", False, 1, 1, tmp_path, endpoint=local,
                          own_table=True)  # fmt: skip
    assert proxied["usd"] == pytest.approx((1000 * 1.0 + 100 * 2.0) / 1e6)
    assert proxied["pricing"] == "price table"
    unnamed = cost_report([item("val/1.jpg", "a")], own, OPENAI_MODEL, False, 1, 1, tmp_path, endpoint=local,
                          own_table=True)  # fmt: skip
    assert unnamed["usd"] is None and unnamed["pricing"] == "local endpoint: no API cost"


def test_openai_and_remote_endpoints_keep_their_price(tmp_path):
    prices = load_prices(DEFAULT_PRICES)
    for url in (None, "https://api.openai.com/v1", "http://10.0.0.5:8000/v1"):
        summary = cost_report(
            [item("val/1.jpg", "a")], prices, OPENAI_MODEL, False, 1, 1, tmp_path, endpoint=url
        )
        assert summary["usd"] == pytest.approx(0.0035) and summary["pricing"] == "price table", url


def test_the_labels_backend_has_no_api_cost(tmp_path):
    summary = cost_report([item("val/1.jpg", "a", usage=(0, 0))], load_prices(DEFAULT_PRICES), "labels",
                          False, 1, 1, tmp_path, offline=True)  # fmt: skip
    assert summary["usd"] is None and summary["pricing"] == "labels backend: no API cost"


@pytest.mark.parametrize(
    ("url", "local"),
    [("http://LOCALHOST:1/v1", True), ("http://api.localhost/v1", True), ("http://127.1.2.3/", True),
     ("https://api.openai.com/v1", False), ("http://192.168.1.2:8000/v1", False), ("http://[::1", False),
     (None, False), ("http://localhost.example.org/v1", False)],
)  # fmt: skip
def test_which_endpoints_are_local(url, local):
    assert is_local(url) is local


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


def panel_texts(figure) -> list[list[str]]:
    """The texts written inside each panel of the fairness figure, top row then bottom row."""
    return [[text.get_text() for text in axis.texts] for axis in figure.axes]


def test_fairness_panels_with_nothing_to_draw_say_so():
    import matplotlib.pyplot as plt

    failing = {("val/1.jpg", "demographics"): item("val/1.jpg", "demographics", status="failed")}
    clean = {("val/1.jpg", "demographics"): item("val/1.jpg", "demographics")}
    refused = {("val/1.jpg", "demographics"): item("val/1.jpg", "demographics", refusals=2)}
    expected = {
        "no refusals": (failing, ["no answers"] * 3 + ["no refusals"] * 3),
        "no refusals, no failures": (clean, ["no refusals and no failures"] * 3),
        "no failures": (refused, ["no failures"] * 3),
        "nothing asked": ({}, ["no answers"] * 3 + ["no QA items"] * 3),
    }
    for case, (entries, notes) in expected.items():
        figure = fairness_figure(fairness_rows(FACES, entries))
        texts = panel_texts(figure)
        plt.close(figure)
        assert [t for panel in texts for t in panel] == notes, case
        assert all(len(panel) <= 1 for panel in texts), case

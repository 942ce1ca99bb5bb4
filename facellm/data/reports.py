"""What a FairFaceGPT run cost and whom it served: the cost report and the fairness report.

Both are compiled from the ledger over the images of the run (so they are right after a resume too):
    cost_report.md / cost.json          tokens in and out, estimated price, projection to the whole split
    fairness_report.md / fairness.png   images, QA pairs, answer length, refusal and failure rates per
                                        race, gender and age bin
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlparse

from facellm.common.cli import FaceLLMError
from facellm.common.files import REPO, read_json, write_json_atomic, write_text_atomic
from facellm.common.ledger import DONE, FAILED
from facellm.data.fairface import AGE_BINS, GENDERS, RACES, FaceRecord
from facellm.data.prompts import RACE_PHRASES
from facellm.data.sources.base import Grouping, SourceRecord, label

DEFAULT_PRICES = REPO / "data" / "prices.json"
GROUPINGS = tuple(Grouping(name, values, label(name)) for name, values in
                  (("race", RACES), ("gender", GENDERS), ("age", AGE_BINS)))  # fmt: skip


def load_prices(path: Path) -> dict:
    if not path.is_file():
        raise FaceLLMError(f"{path}: price table not found")
    table = read_json(path)
    models = table.get("models") if isinstance(table, dict) else None
    if not isinstance(models, dict) or not all(
        isinstance(p, dict) and {"input_per_million", "output_per_million"} <= p.keys()
        for p in models.values()
    ):
        raise FaceLLMError(
            f"{path}: expected an object whose 'models' maps each model to "
            "input_per_million and output_per_million (USD)"
        )
    return table


def is_local(url: str | None) -> bool:
    """Whether URL names this machine (127.0.0.0/8, ::1, localhost, or 0.0.0.0, which connects here): a
    server the user runs himself, not a paid API."""
    try:
        host = urlparse(url).hostname if url else None
    except ValueError:
        return False
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def choose_price(
    prices: dict, model: str, endpoint: str | None, own_table: bool, offline: bool
) -> tuple[dict | None, str, str]:
    """(price per million tokens or None, pricing, the report's line on it). A model served on this machine
    borrows no price from the bundled table because it is called gpt-4o (the default --model): only a table
    the user passed (OWN_TABLE) prices it, for a local proxy to a paid API. No price is ever guessed."""
    price = prices["models"].get(model)
    if offline:
        return None, "labels backend: no API cost", "labels backend: no API cost"
    if is_local(endpoint) and not (own_table and price):
        host = urlparse(endpoint).hostname
        pricing = "local endpoint: no API cost"
        return None, pricing, f"{pricing} ({host}; --prices FILE naming `{model}` prices it)"
    if price is None:
        why = f"no entry for `{model}` in the price table; pass one with --prices FILE"
        return None, "price unknown", f"price unknown ({why})"
    return price, "price table", ""


def cost_report(
    entries: list[dict],
    prices: dict,
    model: str,
    batch: bool,
    images: int,
    split_images: int,
    out: Path,
    *,
    endpoint: str | None = None,
    own_table: bool = False,
    offline: bool = False,
) -> dict:
    """Tokens and price of ENTRIES; ENDPOINT (the base URL), OWN_TABLE (prices given with --prices) and
    OFFLINE (the labels backend) decide whether a price applies, see choose_price."""
    tokens_in = sum(int((e.get("usage") or {}).get("prompt_tokens", 0)) for e in entries)
    tokens_out = sum(int((e.get("usage") or {}).get("completion_tokens", 0)) for e in entries)
    price, pricing, note = choose_price(prices, model, endpoint, own_table, offline)
    summary = {
        "model": model,
        "batch_api": batch,
        "images": images,
        "items": len(entries),
        "prompt_tokens": tokens_in,
        "completion_tokens": tokens_out,
        "pricing": pricing,
        "usd": None,
        "usd_projected_for_split": None,
        "split_images": split_images,
    }
    lines = [
        "# FairFaceGPT cost report",
        "",
        f"- model: `{model}`{' via the Batch API' if batch else ''}",
        f"- images: {images} ({len(entries)} QA items, failed attempts included)",
        f"- tokens: {tokens_in:,} in, {tokens_out:,} out",
    ]
    if price is None:
        lines.append(f"- price: {note}")
    else:
        discount = float(prices.get("batch_discount", 1.0)) if batch else 1.0
        usd = (
            discount
            * (tokens_in * price["input_per_million"] + tokens_out * price["output_per_million"])
            / 1e6
        )
        summary["usd"] = round(usd, 6)
        lines.append(
            f"- estimated price: ${usd:,.4f} at ${price['input_per_million']}/M in, "
            f"${price['output_per_million']}/M out" + (f", x{discount} batch discount" if batch else "")
        )
        if images:
            projected = usd / images * split_images
            summary["usd_projected_for_split"] = round(projected, 2)
            lines.append(f"- projected for all {split_images:,} images of the split: ${projected:,.2f}")
    write_text_atomic(out / "cost_report.md", "\n".join(lines) + "\n")
    write_json_atomic(out / "cost.json", summary)
    return summary


def _names_race(answer: str, race: str) -> bool:
    words = answer.lower()
    phrase = RACE_PHRASES[race].lower()
    return phrase in words or (race == "Latino_Hispanic" and ("latino" in words or "hispanic" in words))


def fairness_rows(
    faces: list[FaceRecord | SourceRecord],
    entries: dict[tuple[str, str], dict],
    groupings: tuple[Grouping, ...] = GROUPINGS,
) -> dict[str, list[dict]]:
    """One table per grouping (FairFace's race, gender and age bin unless the source has its own)."""
    by_image: dict[str, list[dict]] = {}
    for (image, _aspect), entry in entries.items():
        by_image.setdefault(image, []).append(entry)
    tables: dict[str, list[dict]] = {}
    for attribute, values, value_of in groupings:
        rows = []
        for value in values:
            group = [face for face in faces if value_of(face.labels) == value]
            items = [e for face in group for e in by_image.get(face.file, [])]
            done = [e for e in items if e["status"] == DONE]
            failed = [e for e in items if e["status"] == FAILED]
            named = [
                _names_race(entry["answer"], face.race)
                for face in group
                if isinstance(face, FaceRecord)  # FairFace's race groups
                and (entry := entries.get((face.file, "demographics")))
                and entry["status"] == DONE
            ]
            rows.append(
                {
                    attribute: value,
                    "images": len(group),
                    "qa_done": len(done),
                    "qa_failed": len(failed),
                    "mean_answer_words": round(sum(len(e["answer"].split()) for e in done) / len(done), 1)
                    if done
                    else None,
                    "refusal_rate": round(sum(1 for e in items if e.get("refusals")) / len(items), 4)
                    if items
                    else None,
                    "failure_rate": round(len(failed) / len(items), 4) if items else None,
                    "race_named_in_demographics": round(sum(named) / len(named), 4) if named else None,
                }
            )
        tables[attribute] = rows
    return tables


def _cell(value: object, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" if percent else str(value)


def fairness_report(
    faces: list[FaceRecord | SourceRecord],
    entries: dict[tuple[str, str], dict],
    out: Path,
    groupings: tuple[Grouping, ...] = GROUPINGS,
) -> dict:
    tables = fairness_rows(faces, entries, groupings)
    lines = [
        "# FairFaceGPT fairness report",
        "",
        "Per group: images, QA pairs done and failed, mean answer length, share of items that met at least "
        "one refusal (asked again), share of items that failed for good, and how often the demographics "
        "answer names the labelled race group (a rough check that answers follow the labels).",
    ]
    for attribute, rows in tables.items():
        lines += [
            "",
            f"## {attribute}",
            "",
            f"| {attribute} | images | QA done | QA failed | mean answer words | refusal rate | failure rate "
            "| race named |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in rows:
            lines.append(
                f"| {row[attribute]} | {row['images']} | {row['qa_done']} | {row['qa_failed']} | "
                f"{_cell(row['mean_answer_words'])} | {_cell(row['refusal_rate'], True)} | "
                f"{_cell(row['failure_rate'], True)} | {_cell(row['race_named_in_demographics'], True)} |"
            )
    write_text_atomic(out / "fairness_report.md", "\n".join(lines) + "\n")
    write_json_atomic(out / "fairness.json", tables)
    _plot(tables, out / "fairness.png")
    return tables


def _absent(rows: list[dict]) -> str | None:
    """What the rate panel has nothing of, said in the panel: bars of 0 % are invisible on the axis, and an
    empty panel reads as a plot that failed, not as a run without refusals or failures."""
    if all(row["refusal_rate"] is None for row in rows):
        return "no QA items"
    missing = [name for name in ("refusal", "failure") if not any(row[f"{name}_rate"] for row in rows)]
    return " and ".join(f"no {name}s" for name in missing) or None


def _note(axis, text: str) -> None:
    axis.text(
        0.5, 0.85, text, transform=axis.transAxes, ha="center", va="center", fontsize=11, color="dimgrey",
        bbox={"facecolor": "white", "edgecolor": "none"},
    )  # fmt: skip


def fairness_figure(tables: dict[str, list[dict]]):
    """The matplotlib figure of fairness.png: mean answer length (top) and refusal and failure rates
    (bottom) per group of each attribute. The caller closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = len(tables)
    figure, axes = plt.subplots(2, columns, figsize=(5 * columns, 7), constrained_layout=True, squeeze=False)
    for column, (attribute, rows) in enumerate(tables.items()):
        top, bottom = axes[0][column], axes[1][column]
        names = [f"{str(row[attribute]).replace('_', ' ')} (n={row['images']})" for row in rows]
        top.bar(names, [row["mean_answer_words"] or 0 for row in rows], color="#4c72b0")
        top.set_title(f"mean answer words by {attribute}")
        if all(row["mean_answer_words"] is None for row in rows):
            _note(top, "no answers")
        positions = range(len(rows))
        for offset, name in ((-0.2, "refusal"), (0.2, "failure")):
            rates = [100 * (row[f"{name}_rate"] or 0) for row in rows]
            bottom.bar([p + offset for p in positions], rates, 0.4, label=name)
        bottom.set_xticks(list(positions), names)
        highest = max([100 * (row[k] or 0) for row in rows for k in ("refusal_rate", "failure_rate")])
        bottom.set_ylim(0, max(5.0, 1.2 * highest))  # rates of 0 % sit on the axis, not mid-plot
        bottom.set_title(f"refusal / failure rate (%) by {attribute}")
        bottom.legend(loc="upper right")
        if absent := _absent(rows):
            _note(bottom, absent)
        for axis in (top, bottom):
            axis.tick_params(axis="x", labelrotation=45, labelsize=8)
    return figure


def _plot(tables: dict[str, list[dict]], path: Path) -> None:
    figure = fairness_figure(tables)  # selects the Agg backend before pyplot is imported here
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    tmp.replace(path)

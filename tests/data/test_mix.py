"""python -m facellm.data.mix: several label sources generated, re-rooted, registered and mixed into one
recipe that train.sh takes as it is."""

import io
import json
import os
import re
import shutil
import subprocess
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
import yaml

from facellm.common.cli import FaceLLMError, run_cli
from facellm.data import generate as gen
from facellm.data import mix_files, reports
from facellm.data.mix import main, read_config
from facellm.data.sources import registry
from facellm.testing import label_sources
from tests.data.support import copy_faces
from tests.support import REPO, assert_one_line_error, command_env, run_main

TINY_RECIPE = REPO / "configs" / "tiny_cpu_lora_sft.yaml"
# 4 FairFace faces x (8 open + 6 label items), 5 UTKFace faces x (4 open + 6), 4 RAF-DB test faces x 2
RECORDS = {"fairface": 56, "utk": 50, "raf": 8, "celeba": 46, "affectnet": 18}
KINDS = {"fairface": {"open": 32, "short": 12, "mcq": 12}, "utk": {"open": 20, "short": 15, "mcq": 15},
         "raf": {"short": 4, "mcq": 4}, "celeba": {"open": 10, "short": 18, "mcq": 18},
         "affectnet": {"open": 12, "short": 3, "mcq": 3}}  # fmt: skip


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict:
    """Every source's root in its official layout, side by side in one folder (the mix's media_dir)."""
    folder = tmp_path_factory.mktemp("sources")
    return {
        "fairface": copy_faces(folder),
        "utk": label_sources.write_utkface(folder / "utkface"),
        "raf": label_sources.write_rafdb(folder / "rafdb"),
        "celeba": label_sources.write_celeba(folder / "celeba"),
        "affectnet": label_sources.write_affectnet(folder / "affectnet"),
    }


def entries(roots: dict, weights=(2, 1, 0.5, 1, 0.5)) -> dict:
    found = {
        "fairface": {"root": str(roots["fairface"]), "split": "val", "limit": 4},
        "utk": {"source": "utkface", "root": str(roots["utk"]), "limit": 5},
        "raf": {"source": "rafdb", "root": str(roots["raf"]), "split": "test", "items": "short,mcq"},
        "celeba": {"root": str(roots["celeba"]), "split": "val"},
        "affectnet": {"root": str(roots["affectnet"]), "split": "train", "limit": 3},
    }
    for entry, weight in zip(found.values(), weights or (), strict=False):
        entry["weight"] = weight
    return found


def write_config(folder, sources: dict, **top) -> str:
    config = {"out": str(folder / "mix"), "recipe": "configs/tiny_cpu_lora_sft.yaml", "backend": "labels",
              "items": "open,short,mcq", **top, "sources": sources}  # fmt: skip
    path = folder / "mix.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return str(path)


def mix_in_process(*argv: str) -> subprocess.CompletedProcess:
    """The command in this process, as run_main runs one, for module-scoped fixtures (no capsys there)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            run_cli(lambda: main([*argv, "--no-progress"]))
        except SystemExit as stop:
            code = stop.code
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def no_figures(monkeypatch):
    """fairness.png is most of a small run's time and is tested with generate."""
    monkeypatch.setattr(reports, "_plot", lambda tables, path: None)


@pytest.fixture(scope="module")
def mixed(roots, tmp_path_factory):
    """One mix of the five sources with weights: (its config, OUT, the command's output)."""
    folder = tmp_path_factory.mktemp("mixed")
    config = write_config(folder, entries(roots))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reports, "_plot", lambda tables, path: None)
        result = mix_in_process(config)
    assert result.returncode == 0, result.stderr
    return config, folder / "mix", result


def test_every_source_is_generated_registered_and_rerooted(mixed, roots):
    _, out, result = mixed
    info = json.loads((out / "dataset_info.json").read_text())
    assert list(info) == list(RECORDS)
    assert "pass it to training as media_dir" not in result.stdout  # a source's root is not the mix's
    media_dir = yaml.safe_load((out / "train.yaml").read_text())["media_dir"]
    assert media_dir == str(roots["fairface"].parent)  # the folder holding every source's images
    for name, count in RECORDS.items():
        assert info[name]["file_name"] == f"datasets/{name}.json" and info[name]["formatting"] == "sharegpt"
        generated = json.loads((out / name / "dataset.json").read_text())
        mixed_records = json.loads((out / "datasets" / f"{name}.json").read_text())
        assert len(generated) == len(mixed_records) == count
        run = json.loads((out / name / "run.json").read_text())
        image_root = registry.load(registry.get(run.get("source", "fairface")), roots[name], run["split"])[0]
        for before, after in zip(generated, mixed_records, strict=True):
            assert after["conversations"] == before["conversations"]
            (old,), (new,) = before["images"], after["images"]
            assert not os.path.isabs(new) and not new.startswith("..") and new != old
            assert os.path.samefile(os.path.join(media_dir, new), image_root / old)
        assert (out / name / "fairness_report.md").is_file() and (out / name / "ledger.jsonl").is_file()
    assert result.stdout.rstrip().splitlines()[-1] == f"./train.sh {out / 'train.yaml'}"


def test_the_report_counts_each_sources_dataset(mixed):
    _, out, _ = mixed
    record = json.loads((out / "mix.json").read_text())
    report = (out / "mix_report.md").read_text()
    assert [row["name"] for row in record["sources"]] == list(RECORDS)
    for row in record["sources"]:
        records = len(json.loads((out / row["name"] / "dataset.json").read_text()))
        assert row["records"] == row["done"] == records == RECORDS[row["name"]] and row["failed"] == 0
        assert {k: v["done"] for k, v in row["kinds"].items()} == KINDS[row["name"]]
        assert row["pricing"] == "labels backend: no API cost" and row["usd"] is None
        assert f"[fairness]({row['name']}/fairness_report.md)" in report
    assert [row["probability"] for row in record["sources"]] == [0.4, 0.2, 0.1, 0.2, 0.1]
    # interleave_under stops when the first source runs out: RAF-DB's 8 records at 1/10 of the draws
    assert [round(row["examples"]) for row in record["sources"]] == [32, 16, 8, 16, 8]
    assert (
        "| fairface | fairface val | 4 | 56 | 0 | 32 | 12 | 12 | $0 (labels backend) | 2 | 40.0% | ~32 |"
        in (report)
    )
    assert "| **total** |  | 18 | 178 | 0 | 74 | 52 | 52 | $0 |  | 100% | ~80 |  |" in report


def test_the_recipe_is_the_base_one_with_the_mix_as_its_data(mixed):
    config, out, _ = mixed
    text = (out / "train.yaml").read_text()
    recipe, base = yaml.safe_load(text), yaml.safe_load(TINY_RECIPE.read_text())
    mixed_keys = {"dataset_dir", "dataset", "media_dir", "mix_strategy", "interleave_probs"}
    assert {k: v for k, v in recipe.items() if k not in mixed_keys} == {
        k: v for k, v in base.items() if k not in mixed_keys
    }
    assert (recipe["dataset_dir"], recipe["dataset"]) == (str(out), "fairface,utk,raf,celeba,affectnet")
    assert recipe["mix_strategy"] == "interleave_under"
    assert abs(sum(map(float, recipe["interleave_probs"].split(","))) - 1) < 1e-9  # numpy checks the sum
    blocks = [line for line in text.splitlines() if line.startswith("### ")]
    assert blocks == ["### model", "### method", "### dataset", "### output", "### train"]
    assert text.startswith(f"# Written by `python -m facellm.data.mix {config}`\n# from the base recipe "
                           "configs/tiny_cpu_lora_sft.yaml")  # fmt: skip


def test_a_rerun_resumes_and_rewrites_the_same_files(mixed):
    config, out, _ = mixed
    ledgers = {name: (out / name / "ledger.jsonl").read_bytes() for name in RECORDS}
    files = ["dataset_info.json", "train.yaml", "mix_report.md", *(f"datasets/{n}.json" for n in RECORDS)]
    before = {file: (out / file).read_bytes() for file in files}
    result = mix_in_process(config)
    assert result.returncode == 0, result.stderr
    for count in RECORDS.values():
        assert f"this run: 0 done, 0 failed, {count} already done before" in result.stdout
    assert {name: (out / name / "ledger.jsonl").read_bytes() for name in RECORDS} == ledgers
    assert {file: (out / file).read_bytes() for file in files} == before


def test_a_killed_mix_resumes_where_it_stopped(roots, tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path, entries(roots))
    real = gen.generate

    def killed_at_utk(settings, prepared=None):
        if settings.out.name == "utk":
            raise KeyboardInterrupt
        return real(settings, prepared)

    monkeypatch.setattr(gen, "generate", killed_at_utk)
    result = run_main(main, [config, "--no-progress"], capsys)
    out = tmp_path / "mix"
    assert result.returncode == 130 and not (out / "train.yaml").exists()
    assert (
        f"{out / 'utk' / 'ledger.jsonl'} keeps every finished item: run the same mix command" in result.stderr
    )
    ledger = out / "fairface" / "ledger.jsonl"  # and FairFace killed two items before its end
    ledger.write_text("".join(ledger.read_text().splitlines(keepends=True)[:-2]))
    monkeypatch.setattr(gen, "generate", real)
    result = run_main(main, [config, "--no-progress"], capsys)
    assert result.returncode == 0, result.stderr
    assert "this run: 2 done, 0 failed, 54 already done before" in result.stdout
    assert len(json.loads((out / "datasets" / "utk.json").read_text())) == RECORDS["utk"]


def bad(roots, tmp_path, change) -> str:
    """A config of the five sources that CHANGE(top, sources) spoils (or replaces: returned text)."""
    top, sources = {}, entries(roots)
    text = change(top, sources)
    path = write_config(tmp_path, sources, **top)
    if isinstance(text, str):
        (tmp_path / "mix.yaml").write_text(text)
    return path


def update(where: str, **values):
    """A change to the config: WHERE is "top" or a source's name."""
    return lambda top, sources: (top if where == "top" else sources[where]).update(values)


def rename(old: str, new: str, **values):
    return lambda top, sources: sources.update({new: sources.pop(old) | values})


BAD = {  # what to spoil -> what the one line says after the config's name
    "unknown key": (update("top", backnd="labels"), "unknown key 'backnd' (did you mean backend?)"),
    "unknown key of a source": (
        update("raf", wieght=1),
        "sources.raf: unknown key 'wieght' (did you mean weight?)",
    ),
    "unknown source": (update("utk", source="utkfaces"), "sources.utk: source: 'utkfaces' is not one of"),
    "unnamed source": (rename("utk", "mine", source=None), "sources.mine: no source (and 'mine' is not one"),
    "missing root": (
        update("raf", root="/no/such/rafdb"),
        "sources.raf: /no/such/rafdb: RAF-DB root folder does not exist",
    ),
    "split it lacks": (update("raf", split="val"), "sources.raf: split val: RAF-DB has no such split"),
    "bad items": (
        update("raf", items="short,opne"),
        "sources.raf: items: 'short,opne' is not valid (unknown item kind 'opne'",
    ),
    "negative weight": (
        update("utk", weight=-1),
        "sources.utk: weight: '-1' is not valid (a weight is a number of 0 or more",
    ),
    "every weight zero": (
        lambda top, sources: [entry.update(weight=0) for entry in sources.values()],
        "sources: every weight is 0",
    ),
    "a weight too small": (update("raf", weight=1e-7), "sources.raf: weight under a millionth"),
    "a weight missing": (
        lambda top, sources: sources["raf"].pop("weight"),
        "sources.raf: no weight while fairface has one",
    ),
    "name not an identifier": (
        rename("utk", "utk-face"),
        "sources.utk-face: a source's name is an identifier",
    ),
    "reserved name": (rename("utk", "datasets"), "sources.datasets: a source's name"),
    "duplicate name": (lambda top, sources: None, "key 'utk' is given twice (lines"),
    "missing base recipe": (
        update("top", recipe="configs/no_such.yaml"),
        f"recipe: {REPO / 'configs/no_such.yaml'}: base recipe not found",
    ),
    "a setting's folder missing": (
        update("top", exclude_benchmark="/no/such/benchmark"),
        "sources.fairface: exclude_benchmark: /no/such/benchmark: benchmark folder does not exist",
    ),
    "a key the mix sets": (update("top", overrides={"dataset": "x"}), "overrides: dataset is set by the mix"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_naming_the_config_and_generates_nothing(case, roots, tmp_path, capsys):
    change, expected = BAD[case]
    config = bad(roots, tmp_path, change)
    if case == "duplicate name":  # YAML takes the last of two equal keys unless told not to
        text = (tmp_path / "mix.yaml").read_text()
        entry = text[text.index("  utk:") : text.index("  raf:")]
        (tmp_path / "mix.yaml").write_text(text + entry)
    result = run_main(main, [config], capsys)
    assert result.returncode == 2
    assert_one_line_error(result, f"error: {config}: {expected}")
    assert not (tmp_path / "mix").exists()  # the good entries before the bad one cost nothing either


def test_a_bad_entry_leaves_what_was_generated_and_foreign_files_are_never_overwritten(
    roots, tmp_path, capsys
):
    sources = {"raf": entries(roots, weights=None)["raf"]}
    config, out = write_config(tmp_path, sources), tmp_path / "mix"
    assert run_main(main, [config, "--no-progress"], capsys).returncode == 0
    recipe = yaml.safe_load((out / "train.yaml").read_text())  # no weights: every record once
    assert recipe["mix_strategy"] == "concat" and "interleave_probs" not in recipe
    kept = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}

    def same_files():
        return {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == kept

    write_config(tmp_path, {**sources, "utk": {"source": "utkface", "root": str(tmp_path / "none")}})
    assert_one_line_error(run_main(main, [config], capsys), f"{config}: sources.utk:")
    assert same_files()
    write_config(tmp_path, sources)
    (out / "train.yaml").write_text((out / "train.yaml").read_text() + "max_steps: 5\n")  # edited by hand
    kept[out / "train.yaml"] = (out / "train.yaml").read_bytes()
    result = run_main(main, [config], capsys)
    assert_one_line_error(result, f"{out / 'train.yaml'}: not written by facellm.data.mix (or changed since)")
    assert same_files()
    shutil.rmtree(out)
    out.mkdir()
    (out / "dataset_info.json").write_text("{}\n")  # someone's registry: never replaced
    assert_one_line_error(run_main(main, [config], capsys), f"{out / 'dataset_info.json'}: not written by")
    assert [p.name for p in out.iterdir()] == ["dataset_info.json"]  # nothing generated either
    (out / "mix.json").write_text("[]\n")
    assert_one_line_error(run_main(main, [config], capsys), f"{out / 'mix.json'}: not written by")


def test_relative_paths_are_read_from_the_repository_root_and_a_dry_run_writes_nothing(
    roots, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    sources = {"fairface": {"root": "assets/fairface-sample", "split": "val", "limit": 2}}
    config = write_config(tmp_path, sources, out="saves/mix/test-dry-run-never-written")
    result = run_main(main, [config, "--dry-run"], capsys)
    assert result.returncode == 0, result.stderr
    assert (
        "fairface: fairface val from assets/fairface-sample, 2 images, items open,short,mcq" in result.stdout
    )
    assert "media_dir: assets/fairface-sample/fairface-img-margin025-trainval" in result.stdout
    assert (
        result.stdout.rstrip().splitlines()[-1]
        == "./train.sh saves/mix/test-dry-run-never-written/train.yaml"
    )
    assert not (REPO / "saves/mix/test-dry-run-never-written").exists() and not list(tmp_path.glob("saves"))


def test_a_base_recipe_is_rewritten_line_by_line(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(
        "# mine\n### dataset\ndataset: a  # old\nmix_strategy: interleave_over\ninterleave_probs: 0.5,0.5\n"
        "cutoff_len: 8\n\n### train\nlora_target:\n  - q_proj\n  - v_proj\nseed: 1\n"
    )
    changes = {
        "dataset": ("x,y", "new"), "media_dir": ("/m", ""), "mix_strategy": ("concat", ""),
        "interleave_probs": (None, ""), "lora_target": ("all", ""), "max_steps": (4, "short"),
    }  # fmt: skip
    text = mix_files.lay_out(base, changes, ["header"])
    assert text.splitlines() == [
        "# header", "# mine", "### dataset", "dataset: x,y                       # new", "media_dir: /m",
        "mix_strategy: concat", "cutoff_len: 8", "", "### train", "lora_target: all", "seed: 1",
        "max_steps: 4                       # short",
    ]  # fmt: skip
    assert (
        mix_files.shown(REPO / "saves" / "x") == "saves/x" and mix_files.shown("/elsewhere") == "/elsewhere"
    )


def test_an_image_path_that_leaves_its_root_is_refused(tmp_path):
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps([{"conversations": [], "images": ["../../etc/passwd"]}]))
    with pytest.raises(FaceLLMError, match=r"record 0: path '../../etc/passwd' escapes its root folder"):
        mix_files.reroot(dataset, tmp_path / "images", str(tmp_path))


def test_costs_add_up_and_an_unknown_price_is_said(mixed):
    record = json.loads((mixed[1] / "mix.json").read_text())
    prices = [
        (1.5, "price table"),
        (0.25, "price table"),
        (None, "price unknown"),
        (0, "labels"),
        (0, "labels"),
    ]
    rows = zip(record["sources"], prices, strict=True)
    paid = [{**row, "usd": usd, "pricing": pricing} for row, (usd, pricing) in rows]
    report = mix_files.report({**record, "sources": paid})
    assert "| $1.5000 | 2 |" in report and "| unknown | 0.5 |" in report and "| $1.7500 + unknown |" in report


def test_the_example_configs_read_and_the_real_one_asks_for_its_data(capsys):
    for name in ("tiny_cpu_mix", "internvl3_1b_mix"):
        mix, shared, sources = read_config(REPO / "configs" / "mix" / f"{name}.yaml")
        assert mix.recipe.is_file() and shared["backend"] in ("labels", "openai") and len(sources) >= 3
    _, _, sources = read_config(REPO / "configs" / "mix" / "internvl3_1b_mix.yaml")
    assert sources["rafdb"]["split"] == "test"  # never FaceXBench's rafdb_* images
    if not (REPO / "data" / "fairface").exists():
        result = run_main(main, ["configs/mix/internvl3_1b_mix.yaml", "--dry-run"], capsys)
        assert_one_line_error(
            result, "sources.fairface: ", "data/fairface: FairFace root folder does not exist"
        )
    help_text = run_main(main, ["--help"], capsys).stdout
    assert "interleave_under" in help_text and "weight" in help_text and "./train.sh" in help_text


def drawn(lengths: list[int], probs: list[float], seed: int) -> list[int]:
    """Examples per source as `datasets` interleaves them for interleave_under (first_exhausted): sources
    drawn by PROBS, a thousand at a time from numpy's default_rng(SEED), until one runs out."""
    rng, taken = np.random.default_rng(seed), [0] * len(lengths)
    while True:
        for source in rng.choice(len(lengths), size=1000, p=probs):
            taken[source] += 1
            if taken[source] >= lengths[source]:
                return taken


@pytest.mark.slow
def test_train_sh_trains_the_tiny_model_on_every_source_of_the_mix(mixed, tiny_model, tmp_path):
    _, out, result = mixed
    command = result.stdout.rstrip().splitlines()[-1].split()  # ./train.sh OUT/train.yaml, as printed
    run = tmp_path / "lora"
    process = subprocess.run(
        [*command, f"model_name_or_path={tiny_model}", f"output_dir={run}", "max_steps=4", "save_steps=100"],
        cwd=REPO, env={**command_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    assert (run / "adapter_model.safetensors").is_file() and "train: 4 steps" in process.stdout
    assert json.loads((run / "preflight.json").read_text())["records"] == sum(RECORDS.values())
    log = (run / "train.log").read_text()
    for name in RECORDS:
        assert f"Loading dataset datasets/{name}.json..." in log
    recipe = yaml.safe_load((out / "train.yaml").read_text())
    probs = [float(p) for p in recipe["interleave_probs"].split(",")]
    taken = drawn(list(RECORDS.values()), probs, recipe["seed"])
    assert min(taken) > 0  # every source is in what the trainer got
    assert re.search(r"Num examples = ([\d,]+)", log).group(1) == f"{sum(taken):,}"


def test_the_report_says_which_benchmark_images_each_source_lost(roots, tmp_path):
    from facellm.testing.sample_benchmark import build
    from tests.data.test_overlap import add_task
    from tests.support import SAMPLE_FACES

    image_root, records, _ = registry.load(registry.get("utkface"), roots["utk"], "all")
    bench = build(SAMPLE_FACES, tmp_path / "fxb", per_task=1)
    add_task(bench, "utkface_single_mcq_age_test", [[(image_root / records[1].file, "jpeg", 256)]])
    sources = {
        "utk": {"source": "utkface", "root": str(roots["utk"]), "limit": 3, "exclude_benchmark": str(bench)},
        "raf": {"source": "rafdb", "root": str(roots["raf"]), "split": "test", "items": "short"},
    }
    result = mix_in_process(write_config(tmp_path, sources))
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "mix" / "mix_report.md").read_text()
    left_out = "utk 1 (utkface_single_mcq_age_test 1); not checked: raf."
    assert f"FaceXBench images left out before generation: {left_out}" in report
    rows = json.loads((tmp_path / "mix" / "mix.json").read_text())["sources"]
    assert rows[0]["benchmark_excluded"]["images"] == 1 and rows[1]["benchmark_excluded"] is None
    assert records[1].file not in (tmp_path / "mix" / "datasets" / "utk.json").read_text()


def test_a_dry_run_warns_of_each_source_split_that_facexbench_shows(roots, tmp_path, capsys):
    sources = {
        "raf_train": {"source": "rafdb", "root": str(roots["raf"]), "split": "train", "items": "short"},
        "raf_test": {"source": "rafdb", "root": str(roots["raf"]), "split": "test", "items": "short"},
    }
    result = run_main(main, [write_config(tmp_path, sources), "--dry-run"], capsys)
    assert result.returncode == 0, result.stderr
    assert "raf_train: warning: FaceXBench shows RAF-DB train images" in result.stderr
    assert "exclude_benchmark: DIR" in result.stderr and "raf_test" not in result.stderr

"""The README's quick start, run as printed in a fresh clone (tests/quickstart.py): what each stage left."""

import json

from tests.quickstart import QUICKSTART, quickstart_block
from tests.support import REPO


def test_the_block_starts_with_the_install_and_names_no_machine_path():
    block = quickstart_block((REPO / "README.md").read_text())
    lines = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert lines[0].startswith("make install") and lines[1] == "source .venv/bin/activate"
    assert "/home/" not in block and "uv run" not in block


def test_every_stage_of_the_quickstart_left_its_outputs(quickstart):
    out = quickstart / "saves" / "quickstart"
    records = json.loads((out / "ffgpt" / "dataset.json").read_text())
    assert len(records) == 128  # 16 faces x 8 aspects, from the dry-run endpoint
    assert not any("annotation" in turn["value"] for record in records for turn in record["conversations"])
    assert "local endpoint: no API cost" in (out / "ffgpt" / "cost_report.md").read_text()
    assert json.loads((out / "FaceLLM-tiny" / "verification.json").read_text())["passed"]
    card = (out / "FaceLLM-tiny" / "README.md").read_text()
    assert str(quickstart) not in card  # a card names models, never the user's folders
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 16 and all(a["status"] == "done" and a["answer"].strip() for a in answers)
    results = json.loads((out / "results" / "results.json").read_text())
    assert results and (out / "results" / "results.txt").is_file()


def test_the_terminal_shows_progress_not_the_libraries_logs(quickstart):
    shown = (quickstart.parent / "quickstart.log").read_text(encoding="utf-8", errors="replace")
    assert "[INFO" not in shown and "Traceback" not in shown, shown[-3000:]
    assert "full log: " in shown and "train: 60 steps" in shown and "verified:" in shown
    assert (quickstart / "saves/quickstart/lora/train.log").stat().st_size > 10_000  # kept whole there


def test_the_marker_is_in_the_readme_once():
    assert (REPO / "README.md").read_text().count(QUICKSTART) == 1


def test_the_readme_names_every_file_the_stages_wrote(quickstart):
    """Item by item, what the quick start's stages left is listed in the README (checkpoints by pattern)."""
    readme = (REPO / "README.md").read_text()
    outputs = readme[readme.index("## Where outputs go") :]
    out = quickstart / "saves" / "quickstart"
    questions = {path.name for path in (out / "benchmark").glob("*.json")}

    def listed_as(path):
        if path.name.startswith("checkpoint-"):
            return "checkpoint-N/"
        return "<file>.json" if path.name in questions else path.name  # a results file per question file

    written = {
        listed_as(path)
        for folder in ("ffgpt", "lora", "FaceLLM-tiny", "results")
        for path in (out / folder).iterdir()
    }
    missing = sorted(
        name for name in written if f"`{name}`" not in outputs and f"`{name.rstrip('/')}" not in outputs
    )
    assert not missing, missing


def test_licence_citations_and_ignored_web_ui_folders():
    assert (REPO / "LICENSE").read_text().lstrip().startswith("Apache License")
    readme = (REPO / "README.md").read_text()
    licence = readme[readme.index("## Licence and citation") : readme.index("## Development")]
    for needle in ("CC BY 4.0", "FaceXBench", "InternVL3", "2507.10300", "2501.10360", "2403.13372"):
        assert needle in licence, needle
    assert licence.count("@inproceedings{") + licence.count("@article{") == 5
    ignored = (REPO / ".gitignore").read_text().split()
    assert "llamaboard_cache/" in ignored and "llamaboard_config/" in ignored

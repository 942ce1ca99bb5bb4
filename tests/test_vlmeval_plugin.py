from pathlib import Path

import pytest
import vlmeval
import vlmeval.vlm
from vlmeval.config import supported_VLM
from vlmeval.vlm.base import BaseModel

from facellm.cli import FaceLLMError
from facellm.plugin import register_plugin
from facellm.sample_benchmark import build
from tests.conftest import REPO, SAMPLE_FACES, assert_one_line_error, run_command


def test_repo_folder_does_not_shadow_vlmevalkit():
    assert not (REPO / "vlmeval" / "__init__.py").exists()
    assert Path(vlmeval.__file__).parent != REPO / "vlmeval"
    assert "site-packages" in vlmeval.__file__


def test_registration_adds_models_and_class_without_patching():
    config = register_plugin()
    assert vlmeval.vlm.FaceLLM is config.FaceLLM
    assert issubclass(config.FaceLLM, BaseModel)
    for name, path in config.FACELLM_MODELS.items():
        assert supported_VLM[name].keywords["model_path"] == path
    assert register_plugin() is config  # registering twice changes nothing


def test_plugin_answers_interleaved_facexbench_messages(tiny_model, tmp_path):
    register_plugin()
    model = supported_VLM["FaceLLM-1B"](model_path=str(tiny_model), max_new_tokens=4)
    bench = build(SAMPLE_FACES, tmp_path, per_task=1)
    images = sorted(str(p) for p in (bench / "images" / "sample_multiple_mcq_race").glob("*.png"))
    message = [
        {"type": "image", "value": images[0]},
        {"type": "text", "value": "versus"},
        {"type": "image", "value": images[1]},
        {"type": "text", "value": "Same person? (A) yes (B) no"},
    ]
    answer = model.generate(message, dataset="FaceXBench")
    assert isinstance(answer, str)
    assert model.generate(message, dataset="FaceXBench") == answer


def test_evaluate_cli_unknown_model(tmp_path):
    result = run_command(
        "python", "vlmeval/evaluate.py", "--model", "NoSuchModel", "--benchmark-dir", str(tmp_path)
    )
    assert_one_line_error(result, "unknown model 'NoSuchModel'")


def test_evaluate_cli_empty_benchmark_folder(tmp_path):
    result = run_command("python", "vlmeval/evaluate.py", "--benchmark-dir", str(tmp_path))
    assert_one_line_error(result, str(tmp_path), "no FaceXBench question files")


def test_registration_refuses_a_folder_without_the_plugin(tmp_path):
    with pytest.raises(FaceLLMError, match="plug-in not found"):
        register_plugin(tmp_path)

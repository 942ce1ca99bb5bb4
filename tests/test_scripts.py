"""train.sh and export.sh refuse bad input with one clear line before starting LLaMA-Factory."""

import shutil
import subprocess

import pytest
import yaml

from tests.support import REPO, assert_one_line_error, run_command


def test_train_unknown_recipe():
    result = run_command("bash", "train.sh", "configs/no_such_recipe.yaml")
    assert_one_line_error(result, "configs/no_such_recipe.yaml", "recipe not found")


def test_train_override_must_be_key_value():
    result = run_command("bash", "train.sh", "configs/tiny_cpu_lora_sft.yaml", "max_steps")
    assert_one_line_error(result, "'max_steps' is not key=value")


def test_train_help_lists_recipes():
    result = run_command("bash", "train.sh", "--help")
    assert result.returncode == 0
    assert "configs/tiny_cpu_lora_sft.yaml" in result.stdout


def test_export_refuses_a_folder_that_is_not_an_adapter(tmp_path):
    result = run_command("bash", "export.sh", "--adapter", str(tmp_path), "--out", str(tmp_path / "m"))
    assert_one_line_error(
        result, str(tmp_path), "neither a LoRA adapter folder", "nor a full fine-tuning run"
    )


def test_export_unknown_option():
    result = run_command("bash", "export.sh", "--frobnicate")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unrecognized arguments: --frobnicate" in result.stderr.splitlines()[-1]


def test_recipes_keep_remote_code_off_and_the_released_lora_settings():
    for recipe in sorted((REPO / "configs").glob("*.yaml")):
        config = yaml.safe_load(recipe.read_text())
        assert config["trust_remote_code"] is False, recipe
        assert config["template"] == "intern_vl", recipe
        if (
            config["finetuning_type"] == "full"
        ):  # the tiny demo recipe: every weight of a model trained from scratch
            assert recipe.name.startswith("tiny_") and config["freeze_vision_tower"] is False, recipe
            continue
        assert (config["lora_rank"], config["lora_alpha"], config["lora_dropout"]) == (16, 32, 0), recipe
        assert config["dataset"] == "fairfacegpt", recipe


@pytest.mark.parametrize("script", ["train.sh", "export.sh", "serve.sh"])
def test_launchers_find_the_project_environment_from_a_bare_shell(script, tmp_path):
    # a new shell after `make install`: no virtualenv activated, no `uv run`, nothing of the project on PATH
    bare = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        ["bash", script, "--help"], cwd=REPO, env=bare, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "usage:" in result.stdout + result.stderr, result.stderr
    # a copy of the scripts with no environment beside it says how to install one, in one line
    copy = tmp_path / "checkout"
    (copy / "facellm" / "common").mkdir(parents=True)
    shutil.copy(REPO / script, copy / script)
    shutil.copy(REPO / "facellm" / "common" / "environment.sh", copy / "facellm" / "common")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    args = ["--help"] if script != "serve.sh" else ["--model", str(tmp_path / "model")]
    result = subprocess.run(
        ["bash", script, *args], cwd=copy, env=bare, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2 and result.stderr.splitlines() == [
        f"error: the project's environment is not installed ({copy}/.venv/bin/llamafactory-cli not found): "
        f"run 'make install' in {copy}"
    ], result.stderr


def test_the_dry_run_endpoint_and_serve_sh_do_not_share_a_default_port():
    import re

    from facellm.testing.local_endpoint import DEFAULT_PORT

    serve = int(re.search(r"^port=(\d+)$", (REPO / "serve.sh").read_text(), re.MULTILINE).group(1))
    assert serve != DEFAULT_PORT  # both may run at once, as the README's dry run and serving sections do
    readme = (REPO / "README.md").read_text()
    assert f"--base-url http://127.0.0.1:{DEFAULT_PORT}/v1" in readme and f"127.0.0.1:{serve}/v1" in readme


def test_the_dry_run_endpoint_on_a_busy_port_is_one_line_at_once(capsys):
    import socket
    import time

    from facellm.testing.local_endpoint import main
    from tests.support import run_main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = run_main(main, ["--port", str(port)], capsys)
    assert_one_line_error(result, f"port {port}", "in use", "another --port")
    assert time.monotonic() - started < 3

import json

from facellm.testing.tiny_model import IMAGE_SEQ_LENGTH, build_fingerprint, build_tiny_model, weights_digest
from tests.support import assert_one_line_error, run_command

# sha256 of the tensors built with seed 0. It changes only when the recipe changes (then bump RECIPE_VERSION
# in build_tiny_model) or when the torch build initialises weights differently.
SEED0_DIGEST = "55a446a750d2256ff0cd4304080a357f68b962f57cf56af516c92c5044dae0f8"


def test_same_seed_same_weights(tiny_model, tmp_path):
    again = build_tiny_model(tmp_path / "again", seed=0)
    assert weights_digest(again) == weights_digest(tiny_model) == SEED0_DIGEST


def test_other_seed_other_weights(tmp_path):
    assert weights_digest(build_tiny_model(tmp_path / "seed1", seed=1)) != SEED0_DIGEST


def test_folder_is_reused_unless_forced(tiny_model):
    weights = tiny_model / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert build_tiny_model(tiny_model) == tiny_model
    assert weights.stat().st_mtime_ns == stamp


def test_loads_with_the_auto_classes_as_internvl(tiny_model):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model)
    assert type(model).__name__ == "InternVLForConditionalGeneration"
    assert type(processor).__name__ == "InternVLProcessor"
    assert model.config.text_config.model_type == "qwen2"
    tokenizer = processor.tokenizer
    for token in ("<img>", "</img>", "<IMG_CONTEXT>", "<video>", "<|im_start|>", "<|im_end|>"):
        assert tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id, token
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1, token
    vision = model.config.vision_config
    patches = (vision.image_size[0] // vision.patch_size[0]) ** 2
    assert processor.image_seq_length == IMAGE_SEQ_LENGTH == int(patches * model.config.downsample_ratio**2)
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")


def test_weights_are_safetensors_only(tiny_model):
    assert (tiny_model / "model.safetensors").is_file()
    assert not list(tiny_model.glob("*.bin"))
    assert json.loads((tiny_model / "facellm_tiny.json").read_text()) == build_fingerprint(0)


def test_folder_built_from_other_inputs_is_rebuilt(tmp_path):
    folder = build_tiny_model(tmp_path / "m", seed=0)
    marker = folder / "facellm_tiny.json"
    marker.write_text(json.dumps({**build_fingerprint(0), "corpus": "stale"}))
    build_tiny_model(folder, seed=0)
    assert json.loads(marker.read_text()) == build_fingerprint(0)


def test_out_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "f").write_text("x")
    result = run_command("python", "-m", "facellm.testing.tiny_model", "--out", str(tmp_path / "f"))
    assert_one_line_error(result, str(tmp_path / "f"), "not a folder")

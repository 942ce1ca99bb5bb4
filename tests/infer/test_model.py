import json
import shutil
import sys

import pytest
from PIL import Image

from facellm.common.cli import FaceLLMError
from facellm.infer.cli import main
from facellm.infer.model import FaceLLMModel, Part, could_be_hub_id, load_image, training_system_prompt
from tests.support import REPO, SAMPLE_FACES, assert_one_line_error, run_command, run_main

FACE = SAMPLE_FACES / "fairface-img-margin025-trainval" / "val" / "1.jpg"
FACE2 = SAMPLE_FACES / "fairface-img-margin025-trainval" / "val" / "2.jpg"


@pytest.fixture(scope="module")
def model(tiny_model):
    return FaceLLMModel(str(tiny_model), max_new_tokens=8)


GENDER_QUESTION = "What is the perceived gender of the person in this image?"


@pytest.fixture(scope="module")
def learned(learned_tiny):
    return FaceLLMModel(str(learned_tiny["model"]), max_new_tokens=8)


@pytest.fixture(scope="module")
def faces(learned_tiny) -> dict[str, list]:
    """Held-out faces of the world by perceived gender: {"Female": [path, ...], "Male": [...]}."""
    from facellm.data.fairface import load_split

    image_root, records = load_split(learned_tiny["world"], "val")
    found: dict[str, list] = {}
    for record in records:
        found.setdefault(record.gender, []).append(image_root / record.file)
    return found


@pytest.fixture(scope="module")
def tiling_model_dir(tiny_model, tmp_path_factory):
    """The tiny model with tiling switched on in its image processor config (as some checkpoints ship)."""
    folder = tmp_path_factory.mktemp("tiling") / "tiny-tiling"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "processor_config.json").read_text())
    config["image_processor"].update(crop_to_patches=True, max_patches=4)
    (folder / "processor_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("variant", ["as built", "tiling on"])
def test_inputs_match_llamafactory_training_encoding(variant, tiny_model, tiling_model_dir):
    """The ids and pixels inference feeds the model are those LLaMA-Factory trained it on, tiled or not."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments, ModelArguments
    from llamafactory.model import load_tokenizer

    folder = tiny_model if variant == "as built" else tiling_model_dir
    loaded = load_tokenizer(ModelArguments(model_name_or_path=str(folder), image_max_pixels=512 * 512))
    tokenizer, processor = loaded["tokenizer"], loaded["processor"]
    template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template="intern_vl"))
    image = load_image(FACE).resize((224, 112))  # not square: tiling gives 2 tiles + a thumbnail
    question = "Describe this face in detail."
    messages = [{"role": "user", "content": f"<image>\n{question}"}, {"role": "assistant", "content": ""}]
    messages = template.mm_plugin.process_messages(messages, [image], [], [], processor)
    train_ids, _ = template.encode_oneturn(tokenizer, messages, None, None)
    train_pixels = template.mm_plugin._get_mm_inputs([image], [], [], processor)["pixel_values"]

    inputs = FaceLLMModel(str(folder)).encode([Part("image", image), Part("text", question)])
    assert inputs["input_ids"][0].tolist() == list(train_ids)
    assert inputs["pixel_values"].shape == train_pixels.shape
    assert inputs["pixel_values"].shape[0] == (1 if variant == "as built" else 3)
    assert (inputs["pixel_values"] - train_pixels).abs().max() < 1e-5


def test_default_system_prompt_is_the_training_one(model):
    from llamafactory.data.template import TEMPLATES

    assert model.system == training_system_prompt() == TEMPLATES["intern_vl"].default_system
    assert model.system


def test_greedy_answers_are_deterministic_and_follow_the_image(learned, faces):
    # the learned model names what it sees: 8 held-out faces of each gender, all answered right
    for gender in ("Female", "Male"):
        for face in faces[gender][:8]:
            assert learned.answer(face, GENDER_QUESTION) == gender
    first = learned.answer(faces["Female"][0], GENDER_QUESTION)
    assert learned.answer(str(faces["Female"][0]), GENDER_QUESTION) == first


def test_interleaved_images_and_texts(model):
    parts = [Part("text", "Compare"), Part("image", FACE), Part("text", "with"), Part("image", FACE2)]
    assert isinstance(model.generate(parts), str)


def test_unsupported_part_is_refused(model):
    with pytest.raises(ValueError, match="unsupported"):
        model.generate([Part("video", "clip.mp4")])


def test_image_loading_errors(tmp_path):
    with pytest.raises(FaceLLMError, match="image not found"):
        load_image(tmp_path / "none.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(FaceLLMError, match="not an image"):
        load_image(tmp_path / "text.jpg")


def test_image_loading_converts_to_rgb(tmp_path):
    Image.new("RGBA", (30, 20), (1, 2, 3, 4)).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.mode == "RGB" and image.size == (30, 20)


def test_cli_prints_the_same_answer_as_the_library(learned_tiny, learned, faces, capsys):
    # in this process: the demo runs inference.py itself as a user would (its subprocess smoke test)
    answers = []
    for gender in ("Female", "Male"):
        face = faces[gender][0]
        argv = ["--model", str(learned_tiny["model"]), "--path_image", str(face), "--prompt", GENDER_QUESTION]
        result = run_main(main, [*argv, "--max-new-tokens", "8"], capsys)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == learned.generate([Part("image", face), Part("text", GENDER_QUESTION)])
        answers.append(result.stdout.strip())
    assert answers == ["Female", "Male"]  # non-empty, and the image decides


def test_cli_bad_flags(capsys):
    result = run_main(main, ["--path_image", str(FACE), "--max-new-tokens", "0"], capsys)
    assert result.returncode == 2 and "--max-new-tokens: must be positive" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_device_is_a_clear_error(tiny_model):
    with pytest.raises(FaceLLMError, match="'bogus' is not a torch device"):
        FaceLLMModel(str(tiny_model), device="bogus")


def test_cli_bad_inputs(tmp_path, capsys):
    result = run_main(main, ["--model", str(tmp_path), "--path_image", str(tmp_path / "x.jpg")], capsys)
    assert_one_line_error(result, "x.jpg", "image not found")
    result = run_main(main, ["--model", str(tmp_path), "--path_image", str(FACE)], capsys)
    assert_one_line_error(result, str(tmp_path), "neither a model", "nor a LoRA adapter")
    result = run_main(main, ["--path_image", str(FACE), "--prompt", "  "], capsys)
    assert_one_line_error(result, "--prompt is empty")


@pytest.mark.parametrize(
    ("name", "hub"),
    [
        ("Idiap/FaceLLM-1B", True),
        ("gpt2", True),
        ("saves/FaceLLM-1B", True),  # ORG/NAME: a folder if there is one, else the hub's
        ("saves/export/FaceLLM-1B", False),
        ("/models/FaceLLM-1B", False),
        ("./FaceLLM-1B", False),
        ("../FaceLLM-1B", False),
        ("~/FaceLLM-1B", False),
        ("Idiap/FaceLLM-1B/", False),
        ("my model", False),
    ],
)
def test_what_can_be_a_hub_id(name, hub):
    assert could_be_hub_id(name) is hub


def test_a_model_path_that_cannot_be_a_hub_id_fails_at_once(tmp_path, monkeypatch, capsys):
    import facellm.infer.cli as cli

    monkeypatch.setattr(cli, "FaceLLMModel", lambda *a, **k: pytest.fail("the model was loaded"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    shutil.copy(FACE, tmp_path / "photos" / "1.jpg")
    for source in (["--path-image", str(FACE)], ["--images", "photos", "--output", "answers.jsonl"]):
        result = run_main(main, ["--model", "saves/export/FaceLLM-1B", *source], capsys)
        assert_one_line_error(
            result,
            "saves/export/FaceLLM-1B: no such model folder; export one with ./export.sh (or pass a hub id",
        )
    assert not (tmp_path / "answers.jsonl").exists()  # refused before the answers file is made


def test_path_and_name_errors_come_before_torch_transformers_and_vlmevalkit_are_imported(tmp_path):
    """The fast errors of inference.py and evaluate.py, in a fresh interpreter: none of the heavy libraries
    (20 to 40 s to import) is loaded when they are raised."""
    script = f"""
import sys
from facellm.common.cli import FaceLLMError
from facellm.eval.plugin import import_file
from facellm.infer.cli import main as infer
evaluate = import_file({str(REPO / "vlmeval" / "evaluate.py")!r}, "evaluate_script").main
calls = [
    (infer, ["--model", "saves/export/FaceLLM-1B", "--path-image", {str(FACE)!r}]),
    (evaluate, ["--model", "FaceLLM-1B", "--model-path", "saves/export/FaceLLM-1B"]),
    (evaluate, ["--model", "FaceLLM-tin"]),
]
for main, argv in calls:
    try:
        main(argv)
    except FaceLLMError as error:
        print(error)
print(sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "transformers", "vlmeval"}}))
"""
    result = run_command(sys.executable, "-c", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    errors = result.stdout.splitlines()
    assert errors[0].startswith("saves/export/FaceLLM-1B: no such model folder") and errors[1] == errors[0]
    assert errors[2].startswith("unknown model 'FaceLLM-tin'") and errors[3] == "[]", result.stdout


def test_adapter_folder_answers_as_its_merged_export(trained_tiny, model):
    adapter, merged = trained_tiny
    question = "Describe this face in detail."
    via_adapter = FaceLLMModel(str(adapter), max_new_tokens=12).answer(FACE, question)
    assert via_adapter == FaceLLMModel(str(merged), max_new_tokens=12).answer(FACE, question)
    assert via_adapter != model.answer(FACE, question, max_new_tokens=12)  # the adapter changed the model


def test_an_adapter_whose_base_is_missing_is_refused_before_anything_loads(tmp_path, monkeypatch, capsys):
    import facellm.infer.cli as cli

    monkeypatch.setattr(cli, "FaceLLMModel", lambda *a, **k: pytest.fail("the model was loaded"))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"")  # its content is checked once torch is in
    config = {"base_model_name_or_path": str(tmp_path / "no-such-base"), "peft_type": "LORA"}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    result = run_main(main, ["--model", str(adapter), "--path-image", str(FACE)], capsys)
    assert_one_line_error(
        result, f"{tmp_path / 'no-such-base'}: no such model folder", "adapter_config.json names; pass --base"
    )
    result = run_main(main, ["--model", str(adapter), "--base", "./base", "--path-image", str(FACE)], capsys)
    assert_one_line_error(result, "./base: no such model folder; --base takes a model folder or a hub id")


def test_batched_generation_gives_the_one_at_a_time_answers_and_logits(learned, faces, model):
    import torch

    ages = "Which age range does this person appear to be in?"
    pictures = [faces["Female"][0], faces["Male"][0], faces["Female"][1], faces["Male"][1]]
    turns = [
        [Part("image", face), Part("text", [GENDER_QUESTION, ages][i % 2])] for i, face in enumerate(pictures)
    ]
    for engine in (model, learned):
        batched = engine.generate_batch(turns)
        assert [answer for answer, _ in batched] == [engine.generate(turn) for turn in turns]
        assert all(0 < tokens <= 8 for _, tokens in batched)
        # rows of different lengths, left-padded: each row's next-token logits are those it has alone
        with torch.inference_mode():
            together = engine.model(**engine.encode(turns)).logits[:, -1]
            alone = torch.cat([engine.model(**engine.encode(turn)).logits[:, -1] for turn in turns])
        assert engine.encode(turns)["attention_mask"].min() == 0  # padding really happened
        assert torch.allclose(together, alone, atol=1e-4), (together - alone).abs().max()
    answers = [answer for answer, _ in learned.generate_batch(turns)]
    assert answers[0] == "Female" and all(answers)  # non-empty answers of a model that learned


def test_swapping_two_images_in_a_batch_swaps_their_answers(learned, faces):
    female, male = faces["Female"][0], faces["Male"][0]
    turns = [[Part("image", face), Part("text", GENDER_QUESTION)] for face in (female, male)]
    swapped = [[Part("image", face), Part("text", GENDER_QUESTION)] for face in (male, female)]
    answers = [answer for answer, _ in learned.generate_batch(turns)]
    assert answers == ["Female", "Male"]
    assert [answer for answer, _ in learned.generate_batch(swapped)] == answers[::-1]


def test_sampling_follows_the_seed_and_streaming_prints_the_answer(trained_tiny, capsys):
    import torch

    model, tiny_model = FaceLLMModel(str(trained_tiny[1]), max_new_tokens=8), trained_tiny[1]  # LoRA-trained
    torch.manual_seed(1)
    first = model.answer(FACE, "Describe this face in detail.", temperature=1.5)
    torch.manual_seed(1)
    assert model.answer(FACE, "Describe this face in detail.", temperature=1.5) == first
    greedy = model.answer(FACE, "Describe this face in detail.")
    sampled = set()
    for seed in range(2, 6):
        torch.manual_seed(seed)
        sampled.add(model.answer(FACE, "Describe this face in detail.", temperature=1.5))
    assert sampled - {greedy}  # the temperature really samples
    argv = ["--model", str(tiny_model), "--path_image", str(FACE), "--stream", "--max-new-tokens", "8"]
    result = run_main(main, argv, capsys)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == model.answer(FACE, "Describe this face in detail.")
    assert result.stdout.strip()  # a trained model says something


def test_crop_face_without_a_face_says_so_and_answers(trained_tiny, capsys):
    argv = [
        "--model",
        str(trained_tiny[1]),
        "--path_image",
        str(FACE),
        "--crop-face",
        "--max-new-tokens",
        "4",
    ]
    result = run_main(main, argv, capsys)
    assert result.returncode == 0, result.stderr
    assert "no face found, using the whole image" in result.stderr and result.stdout.strip()


def test_a_prompt_beyond_the_context_is_refused_and_the_answer_fits_in_it(model):
    limit = model.context_length
    assert limit == 32768  # InternVL3's
    with pytest.raises(FaceLLMError, match=rf"the prompt is \d+ tokens .* reads at most {limit}"):
        model.answer(FACE, "face " * (limit + 10))
    assert model._room(limit - 10) == 10  # a prompt that fits: the answer gets the positions left


def test_flags_are_never_abbreviated_and_take_both_spellings(tmp_path, capsys):
    """`--image` is not `--images` (no prefix guessing); `--path-image` is `--path_image`, hyphens first."""
    result = run_main(main, ["--image", str(FACE)], capsys)
    assert result.returncode == 2 and "unrecognized arguments: --image" in result.stderr, result.stderr
    result = run_main(main, ["--path-image", str(FACE), "--max-new", "4"], capsys)
    assert result.returncode == 2 and "unrecognized arguments: --max-new 4" in result.stderr, result.stderr
    for flag in ("--path-image", "--path_image"):  # the image is read before the model: no model needed
        result = run_main(main, ["--model", str(tmp_path), flag, str(tmp_path / "x.jpg")], capsys)
        assert_one_line_error(result, "x.jpg", "image not found")
    result = run_main(main, ["--model", str(tmp_path)], capsys)
    assert result.returncode == 2 and "one of the arguments --path-image" in result.stderr
    result = run_main(main, ["--help"], capsys)
    assert result.returncode == 0 and "--path-image PATH_IMAGE, --path_image PATH_IMAGE" in result.stdout

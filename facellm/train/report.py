"""What a finished (or interrupted) training run says about itself: steps, losses, the loss curve.

Read from the Trainer's `trainer_state.json`: in the output folder once training has ended, else in its
newest checkpoint. A resumed run's state carries the history of the run it resumed.
"""

from __future__ import annotations

from pathlib import Path

from facellm.common.cli import FaceLLMError
from facellm.common.files import read_json
from facellm.train.recipes import checkpoints

# drawn by LLaMA-Factory itself when a recipe sets plot_loss: true (every recipe here does)
LOSS_PLOT = "training_loss.png"


def trainer_state(output_dir: Path) -> dict:
    candidates = [output_dir / "trainer_state.json"] + [
        c / "trainer_state.json" for c in checkpoints(output_dir)[::-1]
    ]
    for path in candidates:
        if path.is_file():
            state = read_json(path)
            if isinstance(state, dict) and isinstance(state.get("log_history"), list):
                return state
            raise FaceLLMError(f"{path}: not a Trainer state (no log_history)")
    raise FaceLLMError(
        f"{output_dir}: no trainer_state.json (not a training output folder, or nothing saved yet)"
    )


def losses(state: dict) -> list[tuple[int, float]]:
    """(step, training loss) of every logged step, in order."""
    return [(int(e["step"]), float(e["loss"])) for e in state["log_history"] if "loss" in e and "step" in e]


def training_summary(output_dir: Path) -> dict:
    state = trainer_state(output_dir)
    logged = losses(state)
    return {
        "global_step": int(state.get("global_step", 0)),
        "max_steps": state.get("max_steps"),
        "epochs": state.get("epoch"),
        "first_loss": logged[0][1] if logged else None,
        "final_loss": logged[-1][1] if logged else None,
        "input_tokens_seen": state.get("num_input_tokens_seen"),
    }

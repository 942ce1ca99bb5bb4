"""What a finished (or interrupted) training run says about itself: steps, losses, the loss curve.

Read from the Trainer's `trainer_state.json`: in the output folder once training has ended, else in its
newest checkpoint. A resumed run's state carries the history of the run it resumed.
"""

from __future__ import annotations

from pathlib import Path

from facellm.cli import FaceLLMError
from facellm.files import read_json
from facellm.recipes import checkpoints

LOSS_CURVE = "loss_curve.png"


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


def plot_loss(output_dir: Path, title: str = "") -> Path | None:
    """Draw OUTPUT_DIR/loss_curve.png (raw loss and its running mean); None when nothing was logged."""
    logged = losses(trainer_state(output_dir))
    if not logged:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, values = zip(*logged, strict=True)
    window = max(1, len(values) // 20)
    smooth = [
        sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
        for i in range(len(values))
    ]
    figure, axis = plt.subplots(figsize=(7, 4), dpi=120)
    axis.plot(steps, values, color="tab:blue", alpha=0.35, linewidth=1, label="loss")
    axis.plot(steps, smooth, color="tab:blue", linewidth=2, label=f"running mean ({window} logs)")
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.set_title(title or str(output_dir), fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path = output_dir / LOSS_CURVE
    figure.savefig(path)
    plt.close(figure)
    return path

"""What train.sh shows while LLaMA-Factory trains: one progress bar with the loss, and the log's location.

The trainer's own output (hundreds of lines of configs, warnings and saved files) goes to the run's log
file (facellm.common.transcript); this is the short view beside it. A one-process run gets it from a
TrainerCallback; a distributed one, whose trainer runs in torchrun's workers, from the progress bar and
loss lines of their output.
"""

from __future__ import annotations

import re
from typing import TextIO

# what of a distributed run's output the short view shows: tqdm's step bar and the logged loss dicts
PROGRESS_LINE = re.compile(r"\d+/\d+ \[[^\]]*(?:it/s|s/it)\]|\{'loss'")


def progress_callback(view: TextIO):
    """A TrainerCallback drawing a step bar with the latest loss on VIEW."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.bar = tqdm(
                    total=state.max_steps, initial=state.global_step, desc="train", unit="step",
                    file=view, dynamic_ncols=True, mininterval=1.0,
                )  # fmt: skip

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is not None and logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.4g}", refresh=False)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return Progress()


def shown(chunk: str) -> str:
    """The lines of a distributed trainer's output CHUNK that the short view shows."""
    parts = re.split(r"(?<=[\r\n])", chunk)
    return "".join(part for part in parts if PROGRESS_LINE.search(part))

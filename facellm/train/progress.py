"""What train.sh shows while LLaMA-Factory trains: one progress bar with the loss, and the log's location.

The trainer's own output (hundreds of lines of configs, warnings and saved files) goes to the run's log
file (facellm.common.transcript); this is the short view beside it. A one-process run gets it from a
TrainerCallback; a distributed one, whose trainer runs in torchrun's workers, from the step bar and loss
lines in their output, where they arrive run together with everything else the workers print.
"""

from __future__ import annotations

import re
from typing import TextIO

# the Trainer's step bar: a tqdm bar with no description ("Loading weights: 3/3 [...]" has one), from the
# start of a line or of a redraw up to its closing bracket (a warning may follow on the same line)
STEP_BAR = re.compile(r"(?:^|[\r\n])[ \t]*(\d+%\|[^|\r\n]*\|\s*\d+/\d+ \[[^\]\r\n]*(?:it/s|s/it)\])")
# the Trainer's log lines: {'loss': '0.4601', 'grad_norm': ...} (values quoted or not)
LOSS = re.compile(r"\{'loss': '?([-+0-9.eE]+|nan|inf)'?")
SHOWN = re.compile(f"{STEP_BAR.pattern}|{LOSS.pattern}")


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


class WorkerView:
    """The short view of a distributed run: its workers' output in, one redrawn step bar with the latest
    loss out (what progress_callback draws for a one-process run)."""

    def __init__(self) -> None:
        self.loss: str | None = None
        self.drawn = False
        self.width = 0

    def shown(self, chunk: str) -> str:
        """What of CHUNK, the next piece of the workers' output, the view shows."""
        bars = []
        for match in SHOWN.finditer(chunk):
            if match.group(2) is not None:
                self.loss = f"{float(match.group(2)):.4g}"
            else:
                bars.append(match.group(1))
        if not bars:
            return ""
        self.drawn = True
        bar = bars[-1] if self.loss is None else f"{bars[-1][:-1]}, loss={self.loss}]"
        text = f"train: {bar}"
        padding = " " * (self.width - len(text))  # covers what is left of a longer bar drawn before
        self.width = len(text)
        return f"\r{text}{padding}"

    def end(self) -> str:
        """What ends the view: a newline after a bar, so that the next message starts a line."""
        return "\n" if self.drawn else ""

"""VLMEvalKit's own run.py with the FaceLLM models registered: its other benchmarks, and its --config route.

    python vlmeval/run.py --data MMBench_DEV_EN --model FaceLLM-1B
    python vlmeval/run.py --config my_config.json

In a config file, {"model": {"FaceLLM-1B": {"model_path": "saves/export/FaceLLM-1B"}}} overrides a registered
entry's arguments, and {"class": "FaceLLM", "model_path": ...} builds the class by name. FaceXBench itself
runs through vlmeval/evaluate.py.
"""

import sys

from facellm.eval.plugin import register_plugin


def run_vlmevalkit(argv: list[str]) -> None:
    """VLMEvalKit's own `run.py` (its --data/--model and --config routes) with the plug-in registered first,
    so that its model names and its class lookup by name in `vlmeval.vlm` both find FaceLLM."""
    register_plugin()
    from vlmeval import run  # the installed VLMEvalKit's, not this file: this folder left sys.path above

    run.load_env()
    sys.argv = ["vlmeval/run.py", *argv]
    run.main()


if __name__ == "__main__":
    run_vlmevalkit(sys.argv[1:])

"""VLMEvalKit's own run.py with the FaceLLM models registered: its other benchmarks, and its --config route.

    python vlmeval/run.py --data MMBench_DEV_EN --model FaceLLM-1B
    python vlmeval/run.py --config my_config.json

In a config file, {"model": {"FaceLLM-1B": {"model_path": "saves/export/FaceLLM-1B"}}} overrides a registered
entry's arguments, and {"class": "FaceLLM", "model_path": ...} builds the class by name. FaceXBench itself
runs through vlmeval/evaluate.py.
"""

import sys

from facellm.plugin import run_vlmevalkit

if __name__ == "__main__":
    run_vlmevalkit(sys.argv[1:])

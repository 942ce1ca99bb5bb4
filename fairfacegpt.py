"""Generate the FairFaceGPT question-answer dataset. Run with --help for the options."""

from facellm.common.cli import run_cli
from facellm.data.generate import main

if __name__ == "__main__":
    run_cli(main)

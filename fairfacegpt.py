"""Generate the FairFaceGPT question-answer dataset. Run with --help for the options."""

from facellm.cli import run_cli
from facellm.fairfacegpt import main

if __name__ == "__main__":
    run_cli(main)

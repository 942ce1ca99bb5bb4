"""Answer a question about a face image with a FaceLLM model. Run with --help for the options."""

from facellm.common.cli import run_cli
from facellm.infer.cli import main

if __name__ == "__main__":
    run_cli(main)

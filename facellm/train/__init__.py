"""Stages 3-4, training: LLaMA-Factory recipes, preflight, the train.sh launcher, export.sh."""

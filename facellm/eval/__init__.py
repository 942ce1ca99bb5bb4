"""Stage 6, evaluation: FaceXBench files, the runner, scoring, contamination, VLMEvalKit registration."""

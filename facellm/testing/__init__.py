"""What exists only for the demo and the tests: tiny and noisy models, sample faces and benchmark, a local
OpenAI-compatible endpoint, the demo pipeline. Production code never imports it."""

"""Evaluation loops: perplexity (stream and paper protocols); QA lives in hmtbench.qa."""

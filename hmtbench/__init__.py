"""hmtbench: benchmark long-context memory methods (plain, RMT, HMT) on any Hugging Face causal LM."""

__version__ = "0.1.0"

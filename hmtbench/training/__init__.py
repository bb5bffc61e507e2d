"""Training: one loop for every method (RMT, HMT's two stages, plain + LoRA), checkpoints and resume."""

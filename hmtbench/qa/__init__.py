"""Long-context question answering through the memory: tasks, offline metrics, the per-sample runner."""

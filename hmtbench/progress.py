"""Rich progress bars (one live bar with a stats field: tokens for eval, steps for train), and quiet third parties."""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class LiveProgress:
    """A bar over ``total`` units with a stats field; a context manager."""

    def __init__(self, label: str, total: int, unit: str = "") -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TextColumn("[cyan]{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task(label, total=total, stats="")

    def __enter__(self) -> LiveProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)


class TokenProgress(LiveProgress):
    """Evaluation: tokens read so far and the running tokens/s."""

    def __init__(self, label: str, total_tokens: int) -> None:
        super().__init__(label, total_tokens, "tokens")
        self.start, self.tokens = time.perf_counter(), 0

    def advance(self, segments: int, tokens: int) -> None:
        self.tokens += tokens
        rate = self.tokens / max(time.perf_counter() - self.start, 1e-9)
        self.progress.update(self.task, advance=tokens, stats=f"{rate:,.0f} tok/s")


class StepProgress(LiveProgress):
    """Training: optimizer steps with loss, learning rate and tokens/s."""

    def __init__(self, label: str, steps: int) -> None:
        super().__init__(label, steps, "steps")

    def update(self, step: int, entry: dict[str, Any] | None) -> None:
        """Advance to ``step``; a logged step's ``entry`` also refreshes the numbers shown."""
        if entry is None:
            self.progress.update(self.task, completed=step)
            return
        stats = f"loss {entry['loss']:.4f}  lr {entry['lr']:.2e}  {entry['tokens_per_s']:,.0f} tok/s"
        self.progress.update(self.task, completed=step, stats=stats)


def quiet_transformers() -> None:
    """Keep third-party chatter (GGUF conversion bars, deprecations) off the user's terminal."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF de-quantization bar is a bare tqdm
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass

"""Training windows: D segments of S tokens over the joined corpus, stride one segment (docs/methods.md, "Training")."""

from __future__ import annotations

import torch

from hmtbench.errors import HmtbenchError


class WindowSampler:
    """Overlapping windows of ``window`` tokens with stride ``stride``, shuffled per epoch from a seed.

    Batch ``index`` is a pure function of (seed, index), so a resumed run reads exactly the batches
    an uninterrupted run would have read: the data position is just the micro-batch counter.
    """

    def __init__(self, documents: list[list[int]], window: int, stride: int, seed: int, source: str) -> None:
        self.stream = torch.tensor([t for doc in documents for t in doc], dtype=torch.long)
        if len(self.stream) < window:
            raise HmtbenchError(
                f"{source} holds {len(self.stream)} tokens, fewer than one training window of {window}; "
                "lower --bptt-depth or --segment-length, or train on more data"
            )
        self.window = window
        self.starts = torch.arange(0, len(self.stream) - window + 1, stride)
        self.seed = seed
        self._orders: dict[int, torch.Tensor] = {}

    def _order(self, epoch: int) -> torch.Tensor:
        if epoch not in self._orders:
            self._orders = {
                epoch: torch.randperm(len(self.starts), generator=torch.Generator().manual_seed(self.seed + epoch))
            }
        return self._orders[epoch]

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, index: int, batch_size: int) -> torch.Tensor:
        """(batch_size, window) token ids of micro-batch ``index``."""
        picks = []
        for slot in range(index * batch_size, (index + 1) * batch_size):
            epoch, within = divmod(slot, len(self.starts))
            picks.append(int(self.starts[self._order(epoch)[within]]))
        return torch.stack([self.stream[s : s + self.window] for s in picks])

"""scripts/armt_history_probe.py: a prompt cut to its last K segments is read in exactly the original's last K
segments as the answer layout cuts them, so only the history before them changes."""

from __future__ import annotations

import torch

from hmtbench.answer_layout import answer_first_segments
from tests.conftest import load_script


def test_a_history_cut_starts_on_a_segment_boundary_of_the_whole_prompt() -> None:
    cut = load_script("armt_history_probe").history_prompt
    prompt, segment = torch.arange(1000, dtype=torch.int32), 64
    first = int(answer_first_segments(torch.tensor([len(prompt)]), segment)[0])  # the whole prompt's first segment
    starts = {0, *range(first, len(prompt), segment)}  # where its segments begin
    for kept in (1, 3, 15):
        short = cut(prompt, kept, segment)
        assert int(short[0]) in starts and int(answer_first_segments(torch.tensor([len(short)]), segment)[0]) == segment
        assert torch.equal(short, prompt[int(short[0]):])  # its tail, whole
        assert (len(prompt) - int(short[0]) + 12) // segment == kept  # kept segments, the answer's room counted
    assert torch.equal(cut(prompt, 0, segment), prompt) and torch.equal(cut(prompt, 16, segment), prompt)

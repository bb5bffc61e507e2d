"""scripts/sensory_window.py: the share of training samples whose key lies in the sensory window."""

from __future__ import annotations

from hmtbench.backbones.tiny import byte_tokenizer
from hmtbench.config import from_dict
from hmtbench.training.answers import AnswerSampler
from hmtbench.training.config import CurriculumSettings
from tests.conftest import load_script


def test_the_share_grows_with_the_window_from_none_to_every_key() -> None:
    """At two segments every key precedes the question's segment, so a window as wide as a segment holds them all;
    an empty one holds none. Bytes, 400 text tokens: the rest of the fact's sentence follows its digits, so none sit
    in the last 64 bytes, and a 96-byte window holds about half of them."""
    script, tokenizer = load_script("sensory_window"), byte_tokenizer()
    curriculum = from_dict(CurriculumSettings, {"task": "passkey", "segments": [2], "needles": "earlier"})
    sampler = AnswerSampler(curriculum, tokenizer, 400, seed=1, least=32)
    shares = [script.window_share(sampler, tokenizer, 2, 200, window) for window in (0, 96, 400)]
    assert shares[0] == 0.0 and shares[2] == 1.0
    assert 0.3 < shares[1] < 0.8

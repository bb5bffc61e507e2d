"""Passkeys in wordings no training task uses: did a trained memory learn to retrieve, or learn one template?

``passkey-unseen-a`` words the instructions, the fact and the question anew and keeps the 5-digit key;
``passkey-unseen-b`` also changes the answer's form to a word plus four digits (``ember-4821``). Both share no
sentence with what ``passkey`` and ``multi-fact`` train on (tests/test_unseen_templates.py), are built like
``passkey`` at any length and depth, and are ``held_out``: answer training refuses them.
"""

from __future__ import annotations

import random

from hmtbench.qa.tasks.needle import Passkey, digits

# at most five letters: " word-dddd" and its line break fit the answer layout's room (engine.ANSWER_ROOM) even
# for a byte-level tokenizer
WORDS = ("amber", "birch", "cedar", "delta", "ember", "flint", "grove", "heron", "ivory", "jade", "kelp", "lotus",
         "maple", "nylon", "onyx", "pearl", "quill", "raven", "slate", "tulip")


class UnseenPasskey(Passkey):
    """A passkey in new sentences: instructions, fact and question that training never saw."""

    held_out = True
    intro = ("The notes below are long, and nearly every line is filler. One line records a detail that you will "
             "need at the end, so keep it in mind.\n\n")


class UnseenCode(UnseenPasskey):
    """Wording A: a storage-room code of 5 digits."""

    name = "passkey-unseen-a"
    needle_text = "\nA note on the fridge says the storage room opens with code {key}.\n"
    question_text = "Which code opens the storage room? It opens with code"


class UnseenTag(UnseenPasskey):
    """Wording B: a parcel tag, a word and 4 digits joined by a hyphen."""

    name = "passkey-unseen-b"
    max_new_tokens = 16
    needle_text = "\nThe courier left a parcel tagged {key} at the front desk.\n"
    question_text = "What tag was on the parcel the courier left? The parcel was tagged"

    def key(self, rng: random.Random) -> str:
        return f"{rng.choice(WORDS)}-{digits(rng, 4)}"

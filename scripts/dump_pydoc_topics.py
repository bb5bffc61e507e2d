"""The running Python's ``pydoc_data.topics`` as a JSONL corpus, so that another machine can hide passkeys in the
same filler text.

    python scripts/dump_pydoc_topics.py pydoc-topics-3.12.3.jsonl      # on the machine whose samples to reproduce
    hmtbench eval-qa --task passkey --filler pydoc-topics-3.12.3.jsonl ...   # anywhere: that machine's samples

The built-in filler (``--filler pydoc-topics``) is the interpreter's own module, whose text changes from one Python
version to the next, so the same seed draws other samples on another Python (other ``data_sha256``: no paired test).
The file holds the topics in the order the built-in corpus reads them (sorted by name), one ``{"name", "text"}``
row each, which is what makes the two give the same token stream.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from hmtbench.data.builtin import pydoc_topics


def dump(path: Path) -> int:
    """Write the topics to ``path``; returns how many."""
    topics = pydoc_topics()
    with path.open("w", encoding="utf-8") as out:
        for name, text in topics.items():
            out.write(json.dumps({"name": name, "text": text}, ensure_ascii=False) + "\n")
    return len(topics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the .jsonl file to write")
    args = parser.parse_args()
    count = dump(args.out)
    print(f"wrote {count} topics of Python {platform.python_version()} to {args.out}")


if __name__ == "__main__":
    main()

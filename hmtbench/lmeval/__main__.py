"""``python -m hmtbench.lmeval ARGS``: lm-eval's own command line, with ``--model hmtbench`` registered first.

lm_eval 0.4.13 resolves ``--model`` against its built-in registry before any user code runs and has
no plugin discovery, so its plain ``lm_eval`` command cannot see ``hmtbench``; this one can. Later
releases read the ``lm_eval.models`` entry point that hmtbench's pyproject declares.
"""

from __future__ import annotations


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    import hmtbench.lmeval.model  # noqa: F401  (registers --model hmtbench)

    cli_evaluate()


if __name__ == "__main__":
    main()

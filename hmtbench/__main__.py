"""`python -m hmtbench` entry point."""

from hmtbench.cli import main

main()

"""What each CLI subcommand does, as library functions (cli.py only wires options to these)."""

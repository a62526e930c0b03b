"""Subcommands of the `dfray` CLI: argument parsing only; the work is in the library."""

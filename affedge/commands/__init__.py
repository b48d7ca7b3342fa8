"""Subcommands of the ``affedge`` console command (see affedge/cli.py)."""

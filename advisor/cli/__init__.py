"""The command-line interface: one module per command group, wired in main.py. Nothing below advisor.cli imports it."""

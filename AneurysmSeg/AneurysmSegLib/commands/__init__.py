"""Subcommands of the ``aneurysmseg`` command line, one module each."""

"""The command line: ``pixelpipe`` (a click group), one module per command group."""

from pixelpipe.cli.main import main

__all__ = ["main"]

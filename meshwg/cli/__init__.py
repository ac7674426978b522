"""The `meshwg` command line (console script `meshwg = meshwg.cli:main`)."""

from meshwg.cli.app import main

__all__ = ["main"]

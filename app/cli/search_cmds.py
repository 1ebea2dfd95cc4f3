"""Commands of this group are added as their features land."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this group's subcommands on the top-level parser."""

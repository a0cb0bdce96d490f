"""Where the command line writes a command's result: the one place the library prints to standard output."""

from __future__ import annotations

__all__ = ["emit"]


def emit(text: str) -> None:
    """Write a command's result to standard output (the one place the library prints)."""
    print(text)

"""Exceptions raised by the capture sources."""
from __future__ import annotations


class SourceError(RuntimeError):
    """A capture source could not be opened or stopped delivering (names the source)."""


class SourceFormatError(SourceError, ValueError):
    """The source's data is in a format affedge cannot read (also a ValueError)."""

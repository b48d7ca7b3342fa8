"""Exceptions raised by the capture sources."""
from __future__ import annotations

from affedge.sdk.sources.credentials import hide_credentials


class SourceError(RuntimeError):
    """A capture source could not be opened or stopped delivering (names the source; a
    URL's password is hidden: the message reaches logs and status messages)."""

    def __init__(self, *args):
        super().__init__(*(hide_credentials(a) for a in args))


class SourceFormatError(SourceError, ValueError):
    """The source's data is in a format affedge cannot read (also a ValueError)."""

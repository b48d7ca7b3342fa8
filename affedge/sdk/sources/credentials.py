"""Hides the password of URLs (``rtsp://user:secret@cam/...``) in text shown to people.

Network cameras are commonly addressed with their credentials in the URL. Status messages go
to every WebSocket client and the dashboard, and stderr goes to the journal, so every such
text passes through :func:`hide_credentials`: the user name stays (it tells cameras apart),
the password becomes ``***``. A URL without a password is unchanged.
"""
from __future__ import annotations

import re

# scheme://user:password@  (the password may hold anything but "@", "/" and whitespace; a
# user name without a password is left alone)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):[^\s/@]*@")


def hide_credentials(text):
    """``text`` with every URL's password replaced by ``***`` (non-strings returned as
    given)."""
    if not isinstance(text, str) or "@" not in text:
        return text
    return _USERINFO.sub(r"\g<head>:***@", text)

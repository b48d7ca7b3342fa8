"""Hides the password of URLs (``rtsp://user:secret@cam/...``) in text shown to people.

Network cameras are commonly addressed with their credentials in the URL: in the user-info
part (``user:password@``) or in the query (``?user=admin&password=...``, ``?token=...``).
Status messages go to every WebSocket client and the dashboard, and stderr goes to the
journal, so every such text passes through :func:`hide_credentials`: the user name stays (it
tells cameras apart), the password and secret query values become ``***``. A URL without
them is unchanged.
"""
from __future__ import annotations

import re

# scheme://user:password@host: the password runs to the *last* "@" before the host (a raw "@"
# in a password is a working URL: FFmpeg splits there too; a security trial showed
# "admin:***@ssw0rdSECRET1@..."); a user name without a password is left alone
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@?#]*):[^\s/]*@"
                       r"(?=[^\s/?#@]*(?:[/?#\s]|$))")
# query (or fragment: the dashboard's #token=) parameters that carry secrets: names ending in
# one of these words, compared case-insensitively (X-Amz-Signature, api-key, access_token)
_SECRET_QUERY = re.compile(
    r"(?P<head>[?&;#][\w.-]*?(?:password|passwd|pass|pwd|pw|token|auth|authorization|key|"
    r"secret|signature|sig|credential|credentials|session)=)[^&;#\s'\")]*",
    re.IGNORECASE)


def hide_credentials(text):
    """``text`` with every URL's password and secret query values replaced by ``***``
    (non-strings returned as given)."""
    if not isinstance(text, str):
        return text
    if "@" in text:
        text = _USERINFO.sub(r"\g<head>:***@", text)
    if "=" in text:
        text = _SECRET_QUERY.sub(r"\g<head>***", text)
    return text

"""A camera URL's password never reaches what people see: errors, stderr, status."""
from __future__ import annotations

import socket

import pytest

from affedge.sdk.sources.credentials import hide_credentials
from tests.test_cli_user_errors import affedge


@pytest.mark.parametrize("text,shown", [
    ("cannot open stream rtsp://admin:S3cret!@10.0.0.5:554/s1: refused",
     "cannot open stream rtsp://admin:***@10.0.0.5:554/s1: refused"),
    ("rtsp://:pw@h/a and http://u:v@w:80/x?q=a@b", "rtsp://:***@h/a and http://u:***@w:80/x?q=a@b"),
    ("rtsp://admin@cam/x", "rtsp://admin@cam/x"),  # a user name alone stays
    ("rtsp://cam:554/x", "rtsp://cam:554/x"),  # host:port is not user:password
    ("mail me at a@b.com", "mail me at a@b.com"),
    # a security trial: a raw "@" in the password (FFmpeg connects to the part after the last)
    ("rtsp://admin:Pa@ssw0rdSECRET1@127.0.0.1:18750/stream1 down",
     "rtsp://admin:***@127.0.0.1:18750/stream1 down"),
    ("rtsp://a:b@c@h", "rtsp://a:***@h"),
    # secrets in the query; the user name and other parameters stay
    ("http://127.0.0.1:18751/video.mjpg?user=admin&password=SECRET2&fps=5",
     "http://127.0.0.1:18751/video.mjpg?user=admin&password=***&fps=5"),
    ("http://cam/snap?Token=abc;pwd=x#frag", "http://cam/snap?Token=***;pwd=***#frag"),
    ("http://cam/a?passage=1&keyframe=2", "http://cam/a?passage=1&keyframe=2"),
    # (review) "#" and "?" in a password, signed URLs, the dashboard's own fragment, a repr
    ("rtsp://admin:p#ss?w@cam/s", "rtsp://admin:***@cam/s"),
    ("https://b/o?X-Amz-Signature=abc&X-Amz-Credential=k&api-key=z&n=1",
     "https://b/o?X-Amz-Signature=***&X-Amz-Credential=***&api-key=***&n=1"),
    ("http://127.0.0.1:8765/#token=s3cret", "http://127.0.0.1:8765/#token=***"),
    ("OSError('http://h/x?token=abc')", "OSError('http://h/x?token=***')"),
])
def test_passwords_in_urls_are_hidden_user_names_and_ports_kept(text, shown):
    assert hide_credentials(text) == shown


def test_source_errors_and_run_errors_hide_the_password():
    from affedge.sdk.sources import SourceError, VideoSource

    assert str(SourceError("stream http://u:pw@h/x ended")) == "stream http://u:***@h/x ended"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused at once
        url = f"http://cam:Pa55word@127.0.0.1:{port}/live.ts"
        with pytest.raises(SourceError) as e:
            VideoSource(url, timeout=2)
        assert "Pa55word" not in str(e.value) and "cam:***@127.0.0.1" in str(e.value)
        r = affedge("run", url, "--audio", "none", "--max-frames", "2")
    assert r.returncode == 1 and "Pa55word" not in r.stdout + r.stderr, r.stderr
    assert "cam:***@127.0.0.1" in r.stderr, r.stderr

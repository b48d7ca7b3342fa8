"""examples/ros4hri_bridge.py against a real ZeroMQ sink (dry-run output: ROS 2 is not here)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

zmq = pytest.importorskip("zmq")

from affedge.sdk.prediction import FaceResult, Prediction
from affedge.sdk.sinks import open_sink

ROOT = Path(__file__).resolve().parent.parent


def _bridge(sink, args, send_round):
    """Run examples/ros4hri_bridge.py (--dry-run) against ``sink``, calling ``send_round()``
    every 50 ms until the bridge exits (its --max-messages) -> (returncode, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "ros4hri_bridge.py"),
                             "--zmq", sink.endpoint, "--dry-run", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < end:  # (until it has subscribed too)
            send_round()
            time.sleep(0.05)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        sink.close()
    return proc.returncode, out, err


def test_bridge_republishes_each_face_as_an_expression():
    faces = (FaceResult(7, (0, 0, 9, 9), True, 0.9, 0.1, 0.2, 0.15, 0.25, 0.8),
             FaceResult(8, (20, 0, 9, 9), True, 0.9, 0.3, 0.4, float("nan"), 0.5, 0.6))
    p = Prediction(frame=0, timestamp=0.0, valence=0.1, arousal=0.2, valence_smoothed=0.15,
                   arousal_smoothed=0.25, confidence=0.8, face_present=True,
                   speech_present=True, faces=faces)
    sink = open_sink("zmq://127.0.0.1:0")

    def send():
        sink.write(p, source="kitchen")  # filtered out by topic
        sink.write(p, source="doorbell")  # so is a name that merely starts with "door"
        sink.write(p, source="door")

    rc, out, _ = _bridge(sink, ["--source", "door", "--max-messages", "3", "--timeout", "30"],
                         send)
    msgs = [json.loads(x) for x in out.splitlines()]
    assert rc == 0 and len(msgs) == 3  # face 8's smoothed valence is NaN: skipped
    assert all(m["topic"].startswith("/humans/faces/door_") for m in msgs), msgs
    assert msgs[0] == {"topic": "/humans/faces/door_7/expression", "type": "hri_msgs/Expression",
                       "expression": "", "valence": 0.15, "arousal": 0.25, "confidence": 0.8}


def test_bridge_timeout_counts_predictions_not_status_messages():
    """``--timeout`` is time without a prediction: the hub's status message (once a second)
    used to restart the wait, so the bridge never stopped while a serve process ran."""
    sink = open_sink("zmq://127.0.0.1:0")
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "ros4hri_bridge.py"),
                             "--zmq", sink.endpoint, "--dry-run", "--timeout", "1.5"],
                            stdout=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < end:
            sink.publish_status({"schema": 1, "sources": {}})
            time.sleep(0.1)
        assert proc.poll() == 0, "the bridge kept waiting through 20 s of status messages"
        assert proc.stdout.read() == ""
    finally:
        proc.kill()
        sink.close()


def test_face_ids_are_valid_ros2_name_tokens():
    """serve accepts source names with '-' and '.', which ROS 2 topic names refuse: the bridge
    turns each into one valid token (letters, digits, single underscores, no leading digit)."""
    import importlib.util
    import re

    spec = importlib.util.spec_from_file_location("bridge", ROOT / "examples" / "ros4hri_bridge.py")
    bridge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bridge)
    face = {"track_id": 3, "valence_smoothed": 0.1, "arousal_smoothed": 0.2, "confidence": 0.9}
    token = re.compile(r"^[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*$")
    for source, want in (("cam-1.front", "cam_1_front_3"), ("door", "door_3"),
                         ("2nd--floor", "s2nd_floor_3"), ("a__b", "a_b_3"),
                         (".cam_", "cam_3")):
        (face_id, *_), = bridge.expressions({"source": source, "faces": [face]})
        assert face_id == want and token.match(face_id), (source, face_id)


def test_bridge_skips_stale_repeats_and_reports_a_source_that_retries():
    """Found by a new-user trial: the stale Predictions of frames serve skipped (the previous
    values repeated) went out as new Expressions, and a camera that dropped out was never
    mentioned (the bridge skipped ``_status``, and waited silently until the first message)."""
    import dataclasses

    face = FaceResult(7, (0, 0, 9, 9), True, 0.9, 0.1, 0.2, 0.15, 0.25, 0.8)
    fresh = Prediction(frame=0, timestamp=0.0, valence=0.1, arousal=0.2, valence_smoothed=0.15,
                       arousal_smoothed=0.25, confidence=0.8, face_present=True,
                       speech_present=True, faces=(face,))
    stale = dataclasses.replace(fresh, frame=1, timestamp=0.033, stale=True)
    status = {"schema": 1, "sources": {"door": {"state": "retrying", "error": "gone"}}}
    sink = open_sink("zmq://127.0.0.1:0")

    def send():
        sink.publish_status(status)
        sink.write(stale, source="door")
        sink.write(stale, source="door")
        sink.write(fresh, source="door")

    rc, out, err = _bridge(sink, ["--source", "door", "--max-messages", "4", "--timeout", "30"],
                           send)
    msgs = [json.loads(x) for x in out.splitlines()]
    # 4 predictions counted (stale ones included), only the fresh ones republished
    assert rc == 0 and 1 <= len(msgs) <= 2, msgs
    assert "waiting for predictions" in err
    assert err.count("source door: retrying (gone)") == 1, err

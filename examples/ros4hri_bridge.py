"""Republish ``affedge serve``'s ZeroMQ stream in the ROS4HRI shape (``hri_msgs/Expression``).

Runs as its own process next to ``affedge serve --publish zmq://127.0.0.1:5556``: subscribes to
the sources' topics and, for every tracked face of every prediction, publishes valence,
arousal (the smoothed values: ``valence_smoothed`` / ``arousal_smoothed``, equal to the raw
ones when serve runs with ``--smoothing 0``) and confidence on ``/humans/faces/<face id>/expression`` (ROS4HRI, REP 155), the face
id being ``<source>_<track id>`` (the source name made a valid ROS 2 token: "cam-1.front" ->
"cam_1_front"). The ``expression`` field (a categorical label) stays empty:
affedge predicts the continuous dimensions only.

With ``rclpy`` and ``hri_msgs`` importable (a sourced ROS 2 workspace) it publishes ROS
messages; otherwise, or with ``--dry-run``, it prints the same content as JSON lines, one per
message. ROS 2 itself is not tested with affedge (no ROS on the build machines); the ZeroMQ
side and the dry-run output are.

    affedge serve --source 0 --audio mic --name front --publish zmq://127.0.0.1:5556 &
    python examples/ros4hri_bridge.py --zmq tcp://127.0.0.1:5556
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time


def ros_token(name: str) -> str:
    """``name`` as one ROS 2 name token: letters, digits and single underscores, not starting
    with a digit. affedge source names may hold '-' and '.' ("cam-1.front"), which ROS 2 topic
    names do not allow; "cam-1.front" becomes "cam_1_front" (so "cam-1" and "cam_1" would
    share faces' topics: give such sources distinct names)."""
    token = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", name)).strip("_") or "source"
    return f"s{token}" if token[0].isdigit() else token


def expressions(record: dict):
    """(face id, valence, arousal, confidence) per tracked face of one schema-1 record; NaN
    (JSON null) faces are left out. The face id is a valid ROS 2 name token. A ``stale``
    record (a frame serve had no time for: the previous values repeated) gives none, so a
    subscriber never takes a repeat for a new reading."""
    if record.get("stale"):
        return
    source = ros_token(str(record.get("source", "default")))
    for face in record.get("faces") or []:
        v, a = face.get("valence_smoothed"), face.get("arousal_smoothed")
        if v is None or a is None:
            continue
        yield f"{source}_{face['track_id']}", float(v), float(a), float(face["confidence"])


class RosOut:
    """One ``hri_msgs/Expression`` publisher per face id (created when the face first shows)."""

    def __init__(self, prefix: str):
        import rclpy
        from hri_msgs.msg import Expression

        rclpy.init()
        self.rclpy, self.Expression = rclpy, Expression
        self.node = rclpy.create_node("affedge_ros4hri_bridge")
        self.prefix = prefix.rstrip("/")
        self.pubs: dict = {}

    def publish(self, face_id: str, v: float, a: float, conf: float) -> None:
        pub = self.pubs.get(face_id)
        if pub is None:
            pub = self.pubs[face_id] = self.node.create_publisher(
                self.Expression, f"{self.prefix}/{face_id}/expression", 10)
        msg = self.Expression()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.valence, msg.arousal, msg.confidence = v, a, conf
        pub.publish(msg)

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.shutdown()


class JsonOut:
    """The same content as JSON lines on stdout (no ROS here, or --dry-run)."""

    def __init__(self, prefix: str):
        self.prefix = prefix.rstrip("/")

    def publish(self, face_id: str, v: float, a: float, conf: float) -> None:
        print(json.dumps({"topic": f"{self.prefix}/{face_id}/expression",
                          "type": "hri_msgs/Expression", "expression": "",
                          "valence": v, "arousal": a, "confidence": conf}), flush=True)

    def close(self) -> None:
        pass


def source_changes(status: dict, seen: dict) -> list[str]:
    """Lines for the sources whose state changed in one ``_status`` message (``seen``: the
    last state per source, updated): a robot's operator learns that a camera is retrying."""
    lines = []
    for name, st in (status.get("sources") or {}).items():
        state = st.get("state")
        if seen.get(name) != state:
            if name in seen or state != "running":
                why = f" ({st['error']})" if st.get("error") else ""
                lines.append(f"ros4hri_bridge: source {name}: {state}{why}")
            seen[name] = state
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zmq", default="tcp://127.0.0.1:5556", help="the serve PUB endpoint")
    ap.add_argument("--source", action="append", default=[],
                    help="only these sources (ZeroMQ topics; default: all)")
    ap.add_argument("--prefix", default="/humans/faces", help="ROS4HRI faces namespace")
    ap.add_argument("--dry-run", action="store_true", help="print JSON lines, no ROS")
    ap.add_argument("--max-messages", type=int, default=None,
                    help="stop after this many predictions (tests)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="stop after this many seconds without a prediction")
    args = ap.parse_args(argv)
    import zmq

    out = None
    if not args.dry_run:
        try:
            out = RosOut(args.prefix)
        except ImportError as exc:
            print(f"ros4hri_bridge: ROS 2 not importable ({exc}); printing JSON lines instead",
                  file=sys.stderr)
    out = out or JsonOut(args.prefix)
    sock = zmq.Context.instance().socket(zmq.SUB)
    for topic in args.source + ["_status"] if args.source else [""]:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    sock.connect(args.zmq)
    print(f"ros4hri_bridge: subscribed to {args.zmq}; waiting for predictions", file=sys.stderr,
          flush=True)
    n = 0
    states: dict = {}
    last = time.monotonic()  # of the newest prediction (status messages do not count)
    try:
        while args.max_messages is None or n < args.max_messages:
            left = None if args.timeout is None else args.timeout - (time.monotonic() - last)
            if left is not None and left <= 0:
                break
            if not sock.poll(None if left is None else max(1, int(left * 1000))):
                break
            topic, body = sock.recv_multipart()
            if topic.startswith(b"_"):  # hub status, not a prediction
                if topic == b"_status":
                    for line in source_changes(json.loads(body), states):
                        print(line, file=sys.stderr, flush=True)
                continue
            # ZeroMQ subscriptions match topic *prefixes*: --source front also receives a
            # source named front_left; keep the exact names asked for
            if args.source and topic.decode("utf-8", "replace") not in args.source:
                continue
            n += 1
            last = time.monotonic()
            for face in expressions(json.loads(body)):
                out.publish(*face)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # --dry-run piped into a reader that quit (e.g. | head): done
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
    finally:
        sock.close(0)
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

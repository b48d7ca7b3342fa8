"""IoU tracker: stable ids on synthetic box sequences (crossing faces, occlusion gaps)."""
from __future__ import annotations

import pytest

from affedge.sdk.tracking import IouTracker, iou


def test_iou_basic():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


def test_single_face_keeps_id_while_moving():
    tr = IouTracker()
    ids = []
    for i in range(40):
        tracks = tr.update([(100 + 3 * i, 80, 60, 60, 0.9)])
        assert len(tracks) == 1
        ids.append(tracks[0].id)
    assert set(ids) == {0}
    assert tr.tracks[0].hits == 40


def test_crossing_faces_keep_their_ids():
    # two faces moving towards each other horizontally, overlapping in the middle frames
    tr = IouTracker()
    first = None
    for i in range(60):
        a = (20 + 6 * i, 100, 64, 64)  # left -> right
        b = (380 - 6 * i, 110, 64, 64)  # right -> left
        dets = [b, a] if i % 2 else [a, b]  # detection order must not matter
        tracks = tr.update(dets)
        assert len(tracks) == 2
        by_x = {t.id: t.box for t in tracks}
        if first is None:
            first = {tid: box for tid, box in by_x.items()}
            id_a = [tid for tid, box in first.items() if box[0] == a[0]][0]
            id_b = [tid for tid, box in first.items() if box[0] == b[0]][0]
        assert by_x[id_a] == tuple(float(v) for v in a)
        assert by_x[id_b] == tuple(float(v) for v in b)


def test_occlusion_gap_within_max_age_keeps_id():
    tr = IouTracker(max_age=10)
    for i in range(10):
        tr.update([(100 + 2 * i, 100, 50, 50)])
    for _ in range(6):  # occluded: no detections
        tracks = tr.update([])
        assert len(tracks) == 1 and not tracks[0].detected
    tracks = tr.update([(100 + 2 * 16, 100, 50, 50)])  # reappears where it was heading
    assert [t.id for t in tracks] == [0]
    assert tracks[0].detected and tracks[0].time_since_update == 0


def test_track_deleted_after_max_age_and_new_id_issued():
    tr = IouTracker(max_age=3)
    tr.update([(10, 10, 40, 40)])
    for k in range(3):
        assert len(tr.update([])) == 1
    assert tr.update([]) == [] and tr.removed == [0]
    tracks = tr.update([(10, 10, 40, 40)])
    assert [t.id for t in tracks] == [1]  # ids are never reused


def test_min_hits_suppresses_one_frame_false_positive():
    tr = IouTracker(min_hits=3, max_age=1)
    tr.update([(0, 0, 30, 30), (200, 200, 30, 30)])  # second one is a flicker
    for _ in range(3):
        tr.update([(0, 0, 30, 30)])
    assert [t.id for t in tr.confirmed()] == [0]
    tr.update([(0, 0, 30, 30)])
    assert [t.id for t in tr.tracks] == [0]  # flicker aged out


def test_max_tracks_keeps_largest_new_faces():
    tr = IouTracker(max_tracks=2)
    tracks = tr.update([(0, 0, 10, 10), (100, 0, 50, 50), (300, 0, 30, 30)])
    assert sorted(t.box[2] for t in tracks) == [30.0, 50.0]


def test_bad_detection_is_rejected():
    tr = IouTracker()
    with pytest.raises(ValueError, match="positive size"):
        tr.update([(0, 0, -5, 10)])
    with pytest.raises(ValueError, match="x, y, w, h"):
        tr.update([(0, 0, 5)])

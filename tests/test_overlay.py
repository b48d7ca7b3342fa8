"""draw_overlay: boxes, the primary's bars, and a panel that never hides a face."""
from __future__ import annotations

import numpy as np

from affedge.sdk.overlay import draw_overlay
from affedge.sdk.prediction import FaceResult, Prediction


def _pred(boxes, detected=None):
    detected = detected or [True] * len(boxes)
    faces = tuple(FaceResult(track_id=k, box=b, detected=d, score=0.9, valence=0.2,
                             arousal=-0.3, valence_smoothed=0.2, arousal_smoothed=-0.3,
                             confidence=0.7) for k, (b, d) in enumerate(zip(boxes, detected)))
    return Prediction(frame=0, timestamp=0.0, valence=0.2, arousal=-0.3, valence_smoothed=0.2,
                      arousal_smoothed=-0.3, confidence=0.7, face_present=True,
                      speech_present=False, face_box=boxes[0], track_id=0, faces=faces)


def test_the_panel_goes_where_no_face_is_and_every_box_stays_visible():
    """A kiosk trial: the dark panel, drawn over the top-left corner after the boxes, hid a
    visitor standing there (box and label)."""
    frame = np.full((240, 320, 3), 200, np.uint8)
    out = draw_overlay(frame, _pred([(20.0, 20.0, 80.0, 80.0), (150.0, 150.0, 60.0, 60.0)]))
    # the top-left face keeps its pixels (inside its box, away from the outline and label)
    assert (out[50:90, 40:90] == 200).all()
    # the panel (230 x 120, darkened to 40 %) is in the top-right corner, which no box touches
    assert (out[5:20, 300:318] < 100).all()
    # no face at all: the panel stays top-left, as before
    empty = Prediction(frame=0, timestamp=0.0, valence=0.0, arousal=0.0, valence_smoothed=0.0,
                       arousal_smoothed=0.0, confidence=0.0, face_present=False,
                       speech_present=False)
    assert (draw_overlay(frame, empty)[5:20, 2:8] < 100).all()


def test_a_face_not_seen_this_frame_is_grey_and_shows_no_values():
    frame = np.zeros((240, 320, 3), np.uint8)
    seen = draw_overlay(frame, _pred([(150.0, 100.0, 60.0, 60.0)]))
    lost = draw_overlay(frame, _pred([(150.0, 100.0, 60.0, 60.0)], detected=[False]))
    # its outline is grey (B = G = R), the seen one green
    assert lost[130, 150][0] == lost[130, 150][1] == lost[130, 150][2] > 0
    assert seen[130, 150][1] > seen[130, 150][0]
    # its label says so and carries no values: "#0 (not seen)" is shorter than the seen
    # face's "#0 V+0.20 A-0.30" (a lost face's drifting numbers were shown: a kiosk trial)
    def label_end(img):
        return int(np.nonzero(img[82:97, 150:320].max(axis=(0, 2)))[0].max())
    assert label_end(lost) < label_end(seen) - 10

"""The per-person baseline (affedge.sdk.person_baseline): one implementation for training's fit
and the runtime, fitted on validation people, recorded in the bundle, applied per tracked face by
the engine (and switched off on request), refused when the record is not one this runtime
implements."""
import json
import shutil

import numpy as np
import pytest

from affedge.metrics import ccc
from affedge.sdk.person_baseline import (
    METHOD,
    VERSION,
    PersonBaseline,
    check_record,
    describe,
    make_record,
    shrink_offline,
)
from affedge.training.person_baseline_fit import GRID, fit, training_mean


def test_streaming_equals_offline_and_the_shift_fades():
    rng = np.random.default_rng(0)
    y = np.clip(rng.normal(0.3, 0.4, size=(500, 2)), -1, 1).astype(np.float32)
    alpha, mean = [0.25, 0.7], [0.0, -0.1]
    pb = PersonBaseline(alpha, mean)
    streamed = np.stack([pb.update(v) for v in y])
    np.testing.assert_array_equal(streamed, shrink_offline(y, alpha, mean))
    # frame 0 is pulled alpha of the way to the mean; frame t moves by alpha x (the running
    # mean - mean), so once a stream's own mean is the training mean, it is left as it is
    np.testing.assert_allclose(streamed[0], (1 - np.array(alpha)) * y[0] + np.array(alpha) *
                               np.array(mean), atol=1e-6)
    shift = np.array(alpha) * (y[:100].mean(0) - np.array(mean))
    np.testing.assert_allclose(streamed[99], np.clip(y[99] - shift, -1, 1), atol=1e-6)
    centred = y - y.mean(0) + np.array(mean, np.float32)
    np.testing.assert_allclose(shrink_offline(centred, alpha, mean)[-1], centred[-1], atol=1e-6)
    # alpha 0 is the identity; reset starts a new person
    np.testing.assert_array_equal(shrink_offline(y, [0, 0], mean), y)
    pb.reset()
    np.testing.assert_array_equal(pb.update(y[7]), shrink_offline(y[7:8], alpha, mean)[0])


def _people(offsets, n=600, seed=1):
    """Labels with their own per-person means, and predictions that follow them with a constant
    per-person error (what the model does on unseen synthetic identities: docs/RESULTS.md)."""
    rng = np.random.default_rng(seed)
    preds, labels = [], []
    for k, off in enumerate(offsets):
        t = np.arange(n) / 30.0
        lab = np.stack([0.4 * np.sin(t / (3 + k)), 0.05 * k + 0.5 * np.sin(t / (2 + k))], 1)
        lab = np.clip(lab, -1, 1).astype(np.float32)
        lab[:5] = -5.0  # unlabelled frames are left out of the fit's CCC
        pred = np.where(lab > -5, lab, 0) + np.array(off) + rng.normal(0, 0.05, lab.shape)
        preds.append(pred.astype(np.float32))
        labels.append(lab)
    return preds, labels


def test_fit_pulls_only_the_output_that_carries_a_person_offset():
    # arousal carries +-0.4 per-person offsets, valence none
    preds, labels = _people([(0.0, 0.4), (0.0, -0.4), (0.0, 0.35), (0.0, -0.3)])
    mean = training_mean(labels)
    rec = fit(preds, labels, mean)
    assert rec["method"] == METHOD and rec["version"] == VERSION and rec["val_trials"] == 4
    assert rec["val_frames"] == 4 * 595
    a_v, a_a = rec["alpha"]
    assert a_v == 0.0 and a_a >= 0.5, rec
    before, after = rec["val_ccc_before"], rec["val_ccc_after"]
    assert after["arousal"] > before["arousal"] + 0.1 and after["valence"] == before["valence"]
    # the record's numbers are what the module's own functions give
    lab = np.concatenate([y[5:] for y in labels])
    got = np.concatenate([shrink_offline(np.clip(p, -1, 1), rec["alpha"], mean)[5:] for p in preds])
    assert ccc(lab[:, 1], got[:, 1]) == pytest.approx(after["arousal"])
    assert a_a in GRID and "A 0." in describe(rec) and "->" in describe(rec)
    # people without an offset: pulling their means only hurts, so the fit leaves the model
    preds, labels = _people([(0.0, 0.0)] * 3, seed=2)
    assert fit(preds, labels, training_mean(labels))["alpha"] == [0.0, 0.0]


@pytest.mark.parametrize("bad, why", [
    ({"method": "zscore", "version": 1, "alpha": [0, 0], "mean": [0, 0]}, "not the one"),
    ({"method": METHOD, "version": 2, "alpha": [0, 0], "mean": [0, 0]}, "not the one"),
    ({"method": METHOD, "version": 1, "alpha": [0, 1.5], "mean": [0, 0]}, "alpha must be"),
    ({"method": METHOD, "version": 1, "alpha": [0, float("nan")], "mean": [0, 0]}, "alpha"),
    ({"method": METHOD, "version": 1, "alpha": [0.1], "mean": [0, 0]}, "alpha must be"),
    ({"method": METHOD, "version": 1, "alpha": [0, 0], "mean": [0, -2]}, "mean must be"),
    ("x", "must be an object"),
])
def test_records_this_runtime_cannot_apply_are_refused(bad, why):
    with pytest.raises(ValueError, match=why):
        check_record(bad)


def _bundle_with(tmp_path, rec):
    from affedge.sdk.recognizer import DEMO_BUNDLE

    dst = tmp_path / "bundle"
    shutil.copytree(DEMO_BUNDLE, dst)
    (dst / "manifest.sig").unlink(missing_ok=True)
    m = json.loads((dst / "manifest.json").read_text())
    m["person_baseline"] = rec
    (dst / "manifest.json").write_text(json.dumps(m, indent=2))
    return dst


def _rows(preds, track_id):
    """(frame, valence, arousal) of one track in every frame where it exists (seen or not)."""
    return [(k, f.valence, f.arousal) for k, p in enumerate(preds) for f in (p.faces or [])
            if f.track_id == track_id]


def _demo_frames(n):
    import cv2

    from affedge.sdk.recognizer import DEMO_CLIP

    cap = cv2.VideoCapture(str(DEMO_CLIP))
    frames = [cap.read()[1] for _ in range(n)]
    cap.release()
    assert all(f is not None for f in frames)
    return frames


def _push(bundle, frames, **kw):
    from affedge.sdk.recognizer import Recognizer

    with Recognizer(bundle, backend="onnxruntime", backend_options={"intra_op_threads": 1},
                    **kw) as r:
        return [r.push_frame(f, t=k / 30.0) for k, f in enumerate(frames)], r


REC = make_record([0.3, 0.6], [0.05, -0.2], fitted_on="validation")


def test_the_engine_applies_the_bundle_record_per_tracked_face(tmp_path):
    from affedge.sdk.doctor import _baseline_line

    bundle = _bundle_with(tmp_path, REC)
    frames = _demo_frames(90)
    frames[60:] = [np.zeros_like(f) for f in frames[60:]]  # the face leaves for good
    raw, _ = _push(bundle, frames, person_baseline=False)
    got, r = _push(bundle, frames)
    assert json.loads(json.dumps(r.engine.person_baseline)) == REC
    ids = {f.track_id for p in raw for f in (p.faces or [])}
    assert len(ids) == 1, ids
    rows = _rows(raw, ids.pop())
    assert len(rows) >= 60
    want = shrink_offline(np.array([[v, a] for _, v, a in rows]), REC["alpha"], REC["mean"])
    for (k, _, _), w in zip(rows, want):
        f = got[k].faces[0]
        np.testing.assert_allclose([f.valence, f.arousal], w, atol=2e-6, err_msg=f"frame {k}")
        if got[k].face_present:  # the primary face's columns carry it
            np.testing.assert_allclose([got[k].valence, got[k].arousal], w, atol=2e-6)
    assert max(abs(g.arousal - r0.arousal) for g, r0 in zip(got[:60], raw[:60])) > 0.01
    # frames without a face (the audio-only stream) are the model's own
    empty = [k for k, p in enumerate(raw) if not p.faces]
    assert empty and all(got[k].valence == raw[k].valence and got[k].arousal == raw[k].arousal
                         for k in empty)
    assert "alpha V 0.30 / A 0.60" in _baseline_line(REC) and "none" in _baseline_line(None)


@pytest.mark.parametrize("gap, carried", [(30, True), (75, False)])
def test_a_face_back_within_the_handover_time_keeps_its_baseline(tmp_path, gap, carried):
    """Out of sight for longer than the tracker's max_age (15 frames), the face comes back
    with a new track id: within HANDOVER_S (2 s; 30 frames = 1 s) it carries on with its
    baseline, after it (75 frames = 2.5 s) it starts a new one."""
    bundle = _bundle_with(tmp_path, REC)
    frames = _demo_frames(40 + gap + 40)
    frames[40:40 + gap] = [np.zeros_like(f) for f in frames[40:40 + gap]]
    raw, _ = _push(bundle, frames, person_baseline=False)
    got, _ = _push(bundle, frames)
    order = []
    for p in raw:
        order += [f.track_id for f in (p.faces or []) if f.track_id not in order]
    assert len(order) == 2, order
    a, b = (_rows(raw, i) for i in order)
    assert a[-1][0] < b[0][0]  # the first track was gone before the second began
    chain = np.array([[v, w] for _, v, w in a + b])
    kept = shrink_offline(chain, REC["alpha"], REC["mean"])[-len(b):]
    fresh = shrink_offline(chain[-len(b):], REC["alpha"], REC["mean"])
    assert np.abs(kept - fresh).max() > 0.01  # the two rules differ on these frames
    want = kept if carried else fresh
    for (k, _, _), w in zip(b, want):
        f = got[k].faces[0]
        np.testing.assert_allclose([f.valence, f.arousal], w, atol=2e-6, err_msg=f"frame {k}")


def test_a_baseline_this_runtime_cannot_apply_needs_it_switched_off(tmp_path):
    """A record from a newer affedge (another method or version): the bundle still loads, a
    Recognizer that would apply it is refused with the way out, and one with the baseline
    switched off runs; doctor says so."""
    from affedge.bundle import load_bundle
    from affedge.sdk.doctor import _baseline_line
    from affedge.sdk.recognizer import Recognizer

    rec = {"method": "zscore", "version": 1, "alpha": [0, 0], "mean": [0, 0]}
    bundle = _bundle_with(tmp_path, rec)
    load_bundle(bundle)
    with pytest.raises(ValueError, match="person_baseline: method 'zscore'.*--no-person-baseline"):
        Recognizer(bundle, backend="onnxruntime")
    frames = _demo_frames(3)
    got, _ = _push(bundle, frames, person_baseline=False)
    assert len(got) == 3
    assert "does not implement: runs need --no-person-baseline" in _baseline_line(rec)


@pytest.mark.parametrize("field, value, why", [
    ("alpha", [0.2, 2], "alpha must be"),
    ("val_ccc_before", {"valence": "x", "arousal": 0.5}, "val_ccc_before must map"),
    ("val_ccc_after", {"valence": 1e308, "arousal": 0.5}, "val_ccc_after must map"),
    ("val_trials", -1, "val_trials must be a count"),
    ("fitted_on", 3, "fitted_on must be text"),
])
def test_a_broken_record_of_the_implemented_method_is_refused_at_load(tmp_path, field, value, why):
    from affedge.bundle import BundleError, load_bundle

    bundle = _bundle_with(tmp_path, {**REC, field: value})
    with pytest.raises(BundleError, match=f"manifest person_baseline: {why}"):
        load_bundle(bundle)


def test_the_version_must_be_the_integer():
    assert check_record({**REC}, applying=True)
    for v in (True, 1.0, "1"):
        with pytest.raises(ValueError, match="not the one this affedge implements"):
            check_record({**REC, "version": v})


def test_a_baseline_fitted_to_zero_is_neither_applied_nor_reported(tmp_path):
    """Found by a new-user trial: ``affedge run`` said "the bundle's person baseline applied"
    for a bundle whose fitted strength was 0 for valence and arousal (it changes nothing)."""
    bundle = _bundle_with(tmp_path, make_record([0.0, 0.0], [0.05, -0.2], fitted_on="validation"))
    frames = _demo_frames(10)
    got, r = _push(bundle, frames)
    raw, _ = _push(bundle, frames, person_baseline=False)
    assert r.stats()["person_baseline"] is False
    assert [(p.valence, p.arousal) for p in got] == [(p.valence, p.arousal) for p in raw]
    _, r2 = _push(_bundle_with(tmp_path / "b", REC), frames)
    assert r2.stats()["person_baseline"] is True

"""MediaPipe BlazeFace (short and full range): anchors, keypoints, weighted NMS (model_runner runs it)."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from affedge.features.detectors.base import Detector, file_sha256, register_detector, size_ok
from affedge.features.detectors.model_runner import DetectorModel
from affedge.features.faces import FaceBox, to_bgr

#: the shipped models (scripts/build_face_models.py; licence, source and sha256 in the NOTICE)
MODEL_DIR = Path(__file__).resolve().parents[2] / "assets" / "models" / "blazeface"

#: MediaPipe's face detection graphs (mediapipe/modules/face_detection/
#: face_detection_{short,full}_range*.pbtxt) give per model: the anchor layout ((stride,
#: anchors per cell), ...) with fixed-size anchors, boxes/keypoints as offsets in input pixels,
#: min_score_thresh (0.5 short, 0.6 full) and weighted NMS at IoU 0.3. The shipped ONNX graphs
#: take any input size that is a multiple of ``align`` (scripts/build_face_models.py), so the
#: detector chooses the input scale from the face sizes it searches for.
#: ``faces``: the face side range (input pixels) the model scores well, measured with the
#: astronaut's head pasted at 8-250 px on skimage's coffee photo (score >= 0.79 for the full
#: model in [20, 96] px, >= 0.83 for the short one in [20, 128]; both fall below 0.5 under
#: 16 px and above ~160 px). Passes aim the smallest face at ``faces[0]`` * 1.2.
#: ``min_score``: MediaPipe's 0.6 for the full model; 0.7 for the short one instead of
#: MediaPipe's 0.5, because our passes show it small faces in whole 640x480 scenes, outside
#: its selfie use, where it fires on texture: benchmarks/bench_detectors.py measured, at 0.5 /
#: 0.6 / 0.7, face-free frames with a false positive 22 % / 12 % / 3 % at recall 0.97 / 0.94 /
#: 0.92.
VARIANTS = {
    "short": {"file": "blazeface_short.onnx", "layout": ((8, 2), (16, 6)), "align": 16,
              "native": 128,
              "min_score": 0.7, "faces": (20.0, 112.0)},
    "full": {"file": "blazeface_full.onnx", "layout": ((4, 1),), "align": 32, "native": 192,
             "min_score": 0.6, "faces": (20.0, 88.0)},
}
NMS_IOU = 0.3
#: Upright re-scoring (full passes only). BlazeFace scores a face rolled by 20-45 degrees, or
#: near the low end of its size range, well below an upright one, and it gives some round
#: bright blobs (skimage's moon) a score just above the threshold. So a full pass keeps
#: candidates down to CANDIDATE_FLOOR, and each surviving box is looked at again: the frame is
#: rotated about the box centre so that its eye line is level and scaled so that the box spans
#: the model's middle face size, in a native-size input; the best score near the centre is the
#: view's score. A candidate below ``min_score`` is kept only if its upright view reaches
#: RESCUE_SCORE (its keypoints then come from that view); every box below CONFIDENT_SCORE
#: must reach a mean of CONSENSUS_SCORE over three upright views (middle size, 1.5x it, and
#: mirrored). A box the pass scored >= CONFIDENT_SCORE skips the views (false boxes scored
#: 0.70-0.79 there, real faces a median of 0.85), which halves the re-scoring cost.
#: At most MAX_RESCUES weak candidates (the best-scoring) get an upright view per full pass (a
#: textured frame gave up to 16).
#: Chosen with benchmarks/tune_rescoring.py on benchmarks/bench_detectors.py's frames (130 real
#: faces, 100 non-face patches, 200 face-free frames per seed), 2026-12-02: every full-pass
#: candidate's scores and views recorded for seeds 0-11, rules simulated on seeds 0-5 and
#: checked on 6-8, then on 9-11, which were made after the choice. Floor 0.3 -> 0.2, rescue at
#: ``min_score`` (0.7) -> RESCUE_SCORE 0.65, at most 5 -> 2 rescues, the turned view against
#: the views' mean (below): over the 12 seeds (1560 faces, 2400 face-free frames) recall
#: 0.958 -> 0.968, face-free frames with a false face 0.83 -> 1.00 %, non-face patches 0.1 ->
#: 0 %, upright views per frame 2.42 -> 2.36; on seeds 9-11 alone 0.951 -> 0.956 and 1.00 ->
#: 1.17 %. A rescue of 0.6 gained 0.002 more but gave the moving-photo clip a second face
#: (a 100 px box away from hers). The misses left are mostly LFW's 25x25 faces pasted at
#: 40-60 px, blurred by the upscaling, whose best candidate scores under 0.2.
CANDIDATE_FLOOR = 0.2
RESCUE_SCORE = 0.65
CONSENSUS_SCORE = 0.68
CONFIDENT_SCORE = 0.85
#: A face is not the same upside down: a box below CONFIDENT_SCORE whose view turned 180
#: degrees scores at least TURNED_VETO x the mean of its three upright views is taken for a
#: symmetric blob (the false boxes left were bright blurred disks and round texture).
#: BlazeFace still gives most upside-down faces 0.6+, so only the ratio tells them apart.
#: (Against the upright view alone, the first rule, two real faces of 390 on seeds 3-5 were
#: vetoed: a blurred face's upright view may score under its other views.)
TURNED_VETO = 1.0
MAX_RESCUES = 2
_SHA_CACHE: dict[Path, str] = {}
#: a full pass keeps boxes down to this fraction of ``min_size`` (see ``_detect``). 0.65 (was
#: 0.75): a rolled face's box comes out smaller still (an LFW face pasted at 47 px and 36
#: degrees gave a 26.6 px box, one at 40 px and -29 degrees 28.4 px, both with upright views
#: scoring >= 0.82). benchmarks/bench_detectors.py, 0.75 -> 0.65 (0.60 gave the same):
#: recall 0.969 -> 0.985 (seed 0), 0.954 -> 0.954 (seed 1), 0.962 -> 0.977 (seed 2), with
#: the same false faces (3 / 0 / 1 of 200 face-free frames) and none on non-face patches.
FULL_PASS_SLACK = 0.65
#: a full pass shows the smallest face searched for at SMALLEST_AIM x the model's smallest
#: good face size (``faces[0]``)
SMALLEST_AIM = 1.2
#: a region search shows the model a square of this many face sides around the tracked face
REGION_CONTEXT = 2.5
#: a full pass's finest input is at most this wide (as Haar's ``max_width``): on an HD frame
#: the smallest face found becomes max(min_size, 1.2 x 20 x W / MAX_WIDTH) (72 px at 1920 wide,
#: 48 px at 1280; a face ~3.7 m / ~5.5 m from a 60-degree 1080p / 720p camera), and the pass
#: costs about what a 640-wide frame's does. Measured (push_frame, demo bundle, frames
#: upscaled from the demo clip, 2-core AMD EPYC, 2026-12-01): 1920x1080 p50 / p99 19.9 / 250
#: ms (15 fps) without the cap; 1280x720 13.7 / 105 ms. None: no cap
MAX_WIDTH = 640


def anchor_centres(height: int, width: int, layout) -> np.ndarray:
    """Anchor centres [N, 2] (x, y) in input pixels for an input of ``height`` x ``width``: per
    stride, the grid of cells in row-major order, each repeated ``per_cell`` times (MediaPipe's
    SSD anchors with ``fixed_anchor_size``: the regressors are offsets from these centres)."""
    out = []
    for stride, per_cell in layout:
        ys = (np.arange(int(np.ceil(height / stride)), dtype=np.float32) + 0.5) * stride
        xs = (np.arange(int(np.ceil(width / stride)), dtype=np.float32) + 0.5) * stride
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        out.append(np.repeat(np.stack([xx.ravel(), yy.ravel()], axis=1), per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float = NMS_IOU):
    """MediaPipe's weighted NMS: take the best remaining candidate, average the boxes and
    keypoints of all candidates overlapping it by IoU > ``iou_thr`` (weights = scores), keep the
    best score. ``boxes`` [N, 16] = (x0, y0, x1, y1, 6 keypoints (x, y)). Returns (boxes, scores).
    """
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    keep_b, keep_s = [], []
    alive = np.ones(len(scores), bool)
    area = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    for i in range(len(scores)):
        if not alive[i]:
            continue
        ix0 = np.maximum(boxes[i, 0], boxes[:, 0])
        iy0 = np.maximum(boxes[i, 1], boxes[:, 1])
        ix1 = np.minimum(boxes[i, 2], boxes[:, 2])
        iy1 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.maximum(ix1 - ix0, 0) * np.maximum(iy1 - iy0, 0)
        iou = inter / np.maximum(area[i] + area - inter, 1e-12)
        group = alive & (iou > iou_thr)
        group[i] = True
        w = scores[group]
        keep_b.append((boxes[group] * w[:, None]).sum(0) / w.sum())
        keep_s.append(scores[i])
        alive &= ~group
    if not keep_b:
        return np.zeros((0, 16), np.float32), np.zeros(0, np.float32)
    return np.stack(keep_b).astype(np.float32), np.asarray(keep_s, np.float32)


def drop_nested(boxes: np.ndarray, scores: np.ndarray, ratio: float = 0.6):
    """Drop a box that contains the centre of a higher-scoring box that is either less than
    ``ratio`` times its size or contains its centre in turn: a face does not contain a smaller
    face, but a coarse pass may fire on the blob of head and shoulders around a face the fine
    pass found, and two passes may report one face at two sizes whose weighted-NMS averages
    overlap by less than NMS_IOU (the moving-photo clip of benchmarks/bench_detectors.py)."""
    keep = np.ones(len(scores), bool)
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    for i in range(len(scores)):
        inside = (boxes[i, 0] <= cx) & (cx <= boxes[i, 2]) & (boxes[i, 1] <= cy) & \
            (cy <= boxes[i, 3])
        mutual = (boxes[:, 0] <= cx[i]) & (cx[i] <= boxes[:, 2]) & (boxes[:, 1] <= cy[i]) & \
            (cy[i] <= boxes[:, 3])
        keep[i] = not (inside & ((side < ratio * side[i]) | mutual) & (scores > scores[i])).any()
    return boxes[keep], scores[keep]


#: two confirmed faces whose eyes lie within this fraction of the better face's side of each
#: other's are one face (see ``_drop_same_eyes``)
SAME_EYES = 0.2


def _drop_same_eyes(faces: list[FaceBox]) -> list[FaceBox]:
    """Keep one face per pair of eyes, the best-scoring: a weak candidate merges only with weak
    ones before re-scoring, so a box around the head and shoulders of a face the pass found
    can be rescued by an upright view of that same face (its eyes 3-4 px from the face's on
    benchmarks/bench_detectors.py's moving-photo clip, its box 1.66x as large: just outside
    ``drop_nested``'s ratio)."""
    out: list[FaceBox] = []
    for f in sorted(faces, key=lambda b: -b.score):
        eyes = np.asarray(f.keypoints[:2], np.float64)
        if not any(np.hypot(*(eyes - np.asarray(g.keypoints[:2])).T).max()
                   < SAME_EYES * max(g.w, g.h) for g in out):
            out.append(f)
    return out


class BlazeFaceDetector(Detector):
    """MediaPipe BlazeFace on ONNX Runtime (numpy decoding, no TensorFlow).

    A full pass scales the frame so that a face of ``min_size`` pixels appears at 1.2x the
    smallest face the model scores well (:data:`VARIANTS`), and adds coarser passes (each
    covering the next band of face sizes) until the largest face possible (``max_size`` or the
    frame's short side) is covered or the pass is MediaPipe's letterbox (the whole frame in the
    native 128/192 square); inputs are padded with black to the model's multiple and to at
    least the native size.
    RGB in [-1, 1]; boxes and the six keypoints (:data:`affedge.features.faces.KEYPOINTS`) are
    decoded from the anchors, scores = sigmoid(logit) >= ``min_score``; the candidates of all
    passes are merged by weighted NMS and mapped to frame pixels; faces outside
    [min_size, max_size] (larger box side) are dropped.

    Options: ``min_size`` (default 40; a full pass keeps boxes down to
    ``FULL_PASS_SLACK * min_size``, BlazeFace's box being tighter than Haar's), ``max_size``, ``min_score`` (default 0.6 full, as
    MediaPipe; 0.7 short, see :data:`VARIANTS`), ``model_path`` (default: the shipped model), ``providers`` (ONNX Runtime
    execution providers, default ``["CPUExecutionProvider"]``, e.g.
    ``["CUDAExecutionProvider", "CPUExecutionProvider"]``), ``threads`` (intra-op threads,
    default 1: the detector shares the CPU with the model), ``runtime`` ("auto" = ONNX Runtime,
    or "openvino"; see :mod:`affedge.features.detectors.model_runner`), ``max_width`` (default
    :data:`MAX_WIDTH`: a full pass never shows the model a finer image than the frame
    downscaled to this width; None: no cap).
    """

    has_keypoints = True
    variant = "full"
    #: the model runner is thread-safe (one ONNX Runtime session, or an OpenVINO request per
    #: thread) and a call keeps its state in locals (the anchor cache only ever gains entries)
    concurrent_safe = True

    @classmethod
    def default_model_sha256(cls) -> str | None:
        path = MODEL_DIR / VARIANTS[cls.variant]["file"]
        if path not in _SHA_CACHE:
            _SHA_CACHE[path] = file_sha256(path)
        return _SHA_CACHE[path]

    def __init__(self, min_size: int = 40, max_size: int | None = None,
                 min_score: float | None = None, model_path: str | os.PathLike | None = None,
                 providers=None, threads: int = 1, runtime: str = "auto",
                 max_width: int | None = MAX_WIDTH) -> None:
        super().__init__(min_size, max_size)
        if max_width is not None and int(max_width) < 64:
            raise ValueError(f"{self.name}: max_width must be >= 64 or None, got {max_width}")
        self.max_width = None if max_width is None else int(max_width)
        spec = VARIANTS[self.variant]
        self.layout, self.align = spec["layout"], int(spec["align"])
        self.native = int(spec["native"])
        self.face_lo, self.face_hi = spec["faces"]
        self.min_score = float(spec["min_score"] if min_score is None else min_score)
        if not 0.0 < self.min_score < 1.0:
            raise ValueError(f"{self.name}: min_score must be in (0, 1), got {self.min_score}")
        path = Path(MODEL_DIR / spec["file"] if model_path is None else model_path)
        if not path.is_file():
            raise FileNotFoundError(f"{self.name}: model file not found: {path} (built by "
                                    f"scripts/build_face_models.py)")
        self.model_path = str(path)
        self.model_sha256 = self.default_model_sha256() if model_path is None \
            else file_sha256(path)
        self._model = DetectorModel(self.model_path, providers, threads, runtime)
        self.providers = self._model.providers
        self.runtime = self._model.runtime
        self._anchors: dict[tuple[int, int], np.ndarray] = {}

    # ----------------------------------------------------------------- model call
    def _candidates(self, image: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray]:
        """Decoded candidates scoring >= ``min_score`` of one BGR image (its size a multiple of
        ``align``): [N, 16] (x0, y0, x1, y1, six keypoints (x, y)) in its pixels, and their
        scores (before NMS)."""
        H, W = image.shape[:2]
        # RGB in [-1, 1], NCHW: (x - 127.5) / 127.5 in one OpenCV pass (it releases the GIL;
        # the numpy equivalent held it for ~0.4 ms per 128x128 call on the 2-core CPU)
        x = cv2.dnn.blobFromImage(image, 1.0 / 127.5, (0, 0), (127.5, 127.5, 127.5),
                                  swapRB=True)
        reg, cls = self._model.run(x)
        anchors = self._anchors.get((H, W))
        if anchors is None:
            anchors = self._anchors[(H, W)] = anchor_centres(H, W, self.layout)
        if reg.shape[1] != len(anchors):
            raise ValueError(f"{self.name}: model gave {reg.shape[1]} anchors for a {W}x{H} "
                             f"input, expected {len(anchors)}")
        # the sigmoid is monotonic: only anchors whose logit can reach ``min_score`` are
        # scored (a margin keeps float32 rounding on the safe side; the exact test follows).
        # Every anchor through exp in float64 was 2.8 % of the serve hub's GIL samples (py-spy).
        cls = cls.reshape(-1)
        near = np.flatnonzero(cls >= np.float32(np.log(min_score / (1.0 - min_score)) - 1e-3))
        scores = 1.0 / (1.0 + np.exp(-np.clip(cls[near].astype(np.float64), -100.0, 100.0)))
        keep = near[scores >= min_score]
        scores = scores[scores >= min_score]
        r = reg.reshape(-1, 16)[keep]
        a = anchors[keep]
        out = np.empty_like(r)
        cx, cy = a[:, 0] + r[:, 0], a[:, 1] + r[:, 1]
        out[:, 0], out[:, 2] = cx - r[:, 2] / 2.0, cx + r[:, 2] / 2.0
        out[:, 1], out[:, 3] = cy - r[:, 3] / 2.0, cy + r[:, 3] / 2.0
        out[:, 4::2] = r[:, 4::2] + a[:, :1]
        out[:, 5::2] = r[:, 5::2] + a[:, 1:]
        ok = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
        return out[ok], scores[ok].astype(np.float32)

    def _pass(self, bgr: np.ndarray, x0: float, y0: float, span_w: float, span_h: float,
              s: float, min_score: float) -> tuple[np.ndarray, np.ndarray]:
        """Candidates (frame coordinates) of the rectangle [x0, x0+span_w) x [y0, y0+span_h)
        of ``bgr`` seen at scale ``s`` (parts outside the frame are black)."""
        H, W = bgr.shape[:2]
        a = self.align
        # never smaller than the trained input (black padding, like MediaPipe's letterbox):
        # on tiny inputs the models fire on blobs
        iw = max(self.native, int(np.ceil(span_w * s / a)) * a)
        ih = max(self.native, int(np.ceil(span_h * s / a)) * a)
        img = np.zeros((ih, iw, 3), np.uint8)
        fx0, fy0 = max(int(np.ceil(x0)), 0), max(int(np.ceil(y0)), 0)
        fx1 = min(int(np.floor(x0 + span_w)), W)
        fy1 = min(int(np.floor(y0 + span_h)), H)
        if fx1 <= fx0 or fy1 <= fy0:
            return np.zeros((0, 16), np.float32), np.zeros(0, np.float32)
        dx0, dy0 = int(round((fx0 - x0) * s)), int(round((fy0 - y0) * s))
        dw = min(max(int(round((fx1 - fx0) * s)), 1), iw - dx0)
        dh = min(max(int(round((fy1 - fy0) * s)), 1), ih - dy0)
        if dw < 1 or dh < 1:
            return np.zeros((0, 16), np.float32), np.zeros(0, np.float32)
        part = bgr[fy0:fy1, fx0:fx1]
        interp = cv2.INTER_AREA if s < 1.0 else cv2.INTER_LINEAR
        img[dy0:dy0 + dh, dx0:dx0 + dw] = cv2.resize(part, (dw, dh), interpolation=interp)
        boxes, scores = self._candidates(img, min_score)
        # input pixels -> frame pixels (exact for the pasted part, rounding included)
        sx, sy = (fx1 - fx0) / dw, (fy1 - fy0) / dh
        boxes[:, 0::2] = (boxes[:, 0::2] - dx0) * sx + fx0
        boxes[:, 1::2] = (boxes[:, 1::2] - dy0) * sy + fy0
        return boxes, scores

    def _faces(self, parts, min_size: int, max_size: int | None, region=None) -> list[FaceBox]:
        boxes = np.concatenate([p[0] for p in parts])
        scores = np.concatenate([p[1] for p in parts])
        # candidates at min_score merge as MediaPipe's do; those below it (a full pass's
        # CANDIDATE_FLOOR) merge among themselves, so they never shift a confident box, and go
        # only where no confident box is (they await upright re-scoring in ``_confirm``)
        strong = scores >= self.min_score
        boxes_s, scores_s = drop_nested(*weighted_nms(boxes[strong], scores[strong]))
        if (~strong).any():
            boxes_w, scores_w = weighted_nms(boxes[~strong], scores[~strong])
            both_b = np.concatenate([boxes_s, boxes_w])
            both_s = np.concatenate([scores_s, scores_w])
            kept_b, kept_s = drop_nested(*weighted_nms(both_b, both_s))
            # weighted NMS keeps each group's best score: a weak survivor's score is its own
            weak = kept_s < self.min_score
            boxes = np.concatenate([boxes_s, kept_b[weak]])
            scores = np.concatenate([scores_s, kept_s[weak]])
        else:
            boxes, scores = boxes_s, scores_s
        out = []
        for b, sc in zip(boxes, scores):
            f = FaceBox(float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1]),
                        float(sc), keypoints=tuple((float(b[i]), float(b[i + 1]))
                                                   for i in range(4, 16, 2)))
            if not size_ok(f, min_size, max_size):
                continue
            if region is not None:
                cx, cy = f.center
                if not (region[0] <= cx <= region[2] and region[1] <= cy <= region[3]):
                    continue
            out.append(f)
        return out

    def scales(self, height: int, width: int, min_size: int, max_size: int | None) -> list[float]:
        """The input scales of a full pass over a ``height`` x ``width`` image."""
        lo, hi = SMALLEST_AIM * self.face_lo, self.face_hi
        biggest = float(min(height, width) if max_size is None else min(max_size,
                                                                       max(height, width)))
        floor = min(1.0, self.native / float(max(height, width)))  # the letterbox scale
        cap = 1.0 if self.max_width is None else min(1.0, self.max_width / float(width))
        s = max(floor, min(1.0, cap, lo / max(min_size, 1)))
        out = [s]
        while biggest * s > hi and s > floor:
            s = max(floor, s * lo / hi)
            out.append(s)
        return out

    # ----------------------------------------------------------------- upright re-scoring
    def upright_view(self, bgr: np.ndarray, face: FaceBox, side: float,
                     mirror: bool = False, turn: float = 0.0) -> tuple[float, np.ndarray | None]:
        """Re-score ``face`` upright (see :data:`CANDIDATE_FLOOR`): the frame rotated about the
        box centre so that the eye line is level, scaled so that the box's larger side becomes
        ``side`` input pixels, in a native-size input (mirrored if asked; turned a further
        ``turn`` degrees if asked, 180 for :data:`TURNED_VETO`). Returns the best score whose
        box centre lies within 0.35 x ``side`` of the input's centre (0.0 if none) and,
        unmirrored and unturned, its six keypoints mapped back to frame pixels [6, 2]."""
        (ex0, ey0), (ex1, ey1) = face.keypoints[0], face.keypoints[1]
        angle = float(np.degrees(np.arctan2(ey1 - ey0, ex1 - ex0))) + turn
        s = side / max(face.w, face.h, 1.0)
        cx, cy = face.center
        n = self.native
        M = cv2.getRotationMatrix2D((cx, cy), angle, s)
        M[:, 2] += (n / 2.0 - cx, n / 2.0 - cy)
        img = cv2.warpAffine(bgr, M, (n, n),
                             flags=cv2.INTER_AREA if s < 1.0 else cv2.INTER_LINEAR)
        if mirror:
            img = np.ascontiguousarray(img[:, ::-1])
        boxes, scores = self._candidates(img, 0.05)
        centre = (boxes[:, 0:2] + boxes[:, 2:4]) / 2.0
        near = np.hypot(centre[:, 0] - n / 2.0, centre[:, 1] - n / 2.0) < 0.35 * side
        if not near.any():
            return 0.0, None
        i = int(np.argmax(np.where(near, scores, -1.0)))
        if mirror or turn:
            return float(scores[i]), None
        pts = boxes[i, 4:].reshape(-1, 2).astype(np.float64)
        back = cv2.invertAffineTransform(M)
        return float(scores[i]), pts @ back[:, :2].T + back[:, 2]

    def _confirm(self, bgr: np.ndarray, faces: list[FaceBox]) -> list[FaceBox]:
        """The boxes of a full pass that pass upright re-scoring (:data:`CANDIDATE_FLOOR`)."""
        mid = float(np.sqrt(self.face_lo * self.face_hi))
        weak = sorted((f.score for f in faces if f.score < self.min_score), reverse=True)
        weak_floor = weak[MAX_RESCUES - 1] if len(weak) > MAX_RESCUES else 0.0
        out = []
        for f in faces:
            if f.score >= CONFIDENT_SCORE:
                out.append(f)
                continue
            if f.score < self.min_score and f.score < weak_floor:
                continue
            score, kps = self.upright_view(bgr, f, mid)
            if f.score < self.min_score:
                if score < RESCUE_SCORE or kps is None:
                    continue
                f = FaceBox(f.x, f.y, f.w, f.h, score,
                            keypoints=tuple((float(x), float(y)) for x, y in kps))
            mean_view = float(np.mean((score, self.upright_view(bgr, f, 1.5 * mid)[0],
                                       self.upright_view(bgr, f, mid, mirror=True)[0])))
            if mean_view >= CONSENSUS_SCORE and \
                    self.upright_view(bgr, f, mid, turn=180.0)[0] < TURNED_VETO * mean_view:
                out.append(f)
        return out

    # ----------------------------------------------------------------- Detector interface
    def _detect(self, image: np.ndarray, min_size: int, max_size: int | None) -> list[FaceBox]:
        bgr = to_bgr(image)
        H, W = bgr.shape[:2]
        floor = min(self.min_score, CANDIDATE_FLOOR)
        parts = [self._pass(bgr, 0.0, 0.0, float(W), float(H), s, floor)
                 for s in self.scales(H, W, min_size, max_size)]
        # BlazeFace's box is tight (brows to chin): a face searched for at ``min_size`` may
        # come out ~20 % smaller (~35 % when rolled), so a full pass keeps boxes down to
        # FULL_PASS_SLACK x it
        faces = self._faces(parts, max(1, int(FULL_PASS_SLACK * min_size)), max_size)
        return _drop_same_eyes(self._confirm(bgr, faces))

    def detect_region(self, frame: np.ndarray, region, min_size: int | None = None,
                      max_size: int | None = None) -> list[FaceBox]:
        """Faces whose centre lies in ``region`` (x0, y0, x1, y1), frame coordinates, best
        first, side in [min_size, max_size]. One model pass over the square centred on the
        region of side max(region side, REGION_CONTEXT x the middle face size), scaled so the
        middle face size appears in the middle of the model's good range."""
        from affedge.features.faces import check_frame

        check_frame(frame)
        lo = self.min_size if min_size is None else max(1, int(min_size))
        hi = self.max_size if max_size is None else max(lo, int(max_size))
        rx0, ry0, rx1, ry1 = (float(v) for v in region)
        H, W = frame.shape[:2]
        if min(rx1, W) - max(rx0, 0) < lo or min(ry1, H) - max(ry0, 0) < lo:
            return []
        mid = float(np.sqrt(lo * hi)) if hi else float(lo)
        span = max(rx1 - rx0, ry1 - ry0, REGION_CONTEXT * mid)
        s = float(np.sqrt(self.face_lo * self.face_hi)) / mid
        cx, cy = (rx0 + rx1) / 2.0, (ry0 + ry1) / 2.0
        part = self._pass(to_bgr(frame), cx - span / 2.0, cy - span / 2.0, span, span, s,
                          self.min_score)
        faces = self._faces([part], lo, hi, region=(rx0, ry0, rx1, ry1))
        return sorted(faces, key=lambda b: (b.score, b.area), reverse=True)


@register_detector("blazeface")
class BlazeFaceFull(BlazeFaceDetector):
    __doc__ = "Full-range BlazeFace (trained at 192x192; MediaPipe: faces up to ~5 m). " + \
        (BlazeFaceDetector.__doc__ or "")
    variant = "full"


@register_detector("blazeface-short")
class BlazeFaceShort(BlazeFaceDetector):
    __doc__ = "Short-range BlazeFace (trained at 128x128; MediaPipe: faces within ~2 m). " + \
        (BlazeFaceDetector.__doc__ or "")
    variant = "short"

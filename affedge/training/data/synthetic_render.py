"""Drawing of the synthetic data: faces with expressions, backgrounds, head poses, occluders."""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # the identity record lives with the generator
    from affedge.training.data.synthetic import Identity

FRAME_W, FRAME_H = 320, 240  # synthetic video frame size
CANVAS = 176  # face drawing canvas (pixels at scale 1)


# ----------------------------------------------------------------------------- face drawing
def _pt(x: float, y: float) -> tuple[int, int]:
    return (int(round(x * 4)), int(round(y * 4)))  # 2 fractional bits for cv2 shift=2


def _ax(a: float, b: float) -> tuple[int, int]:
    return (max(int(round(a * 4)), 1), max(int(round(b * 4)), 1))


class FaceRenderer:
    """Draws one identity's face on a CANVAS x CANVAS patch with an alpha mask.

    Everything that does not move (skin, shading, lighting, nose, hair) is drawn once in
    ``__init__``; ``draw`` adds eyes, brows and mouth for one frame's expression.
    """

    def __init__(self, ident: Identity, light: float) -> None:
        self.id = ident
        C = CANVAS
        self.cx, self.cy = C / 2.0, C / 2.0 + 8.0
        cx, cy, ax, ay = self.cx, self.cy, ident.face_ax, ident.face_ay
        yy, xx = np.mgrid[0:C, 0:C].astype(np.float32)
        img = np.zeros((C, C, 3), np.float32)
        alpha = np.zeros((C, C), np.uint8)
        skin = np.array(ident.skin_bgr, np.float32)
        hair = np.array(ident.hair_bgr, np.float32)
        sh = 2
        # hair behind the head
        if ident.hair_style == 1:  # long
            cv2.ellipse(img, _pt(cx, cy - 0.1 * ay), _ax(ax * 1.22, ay * 1.12), 0, 0, 360,
                        hair.tolist(), -1, cv2.LINE_AA, sh)
            cv2.ellipse(alpha, _pt(cx, cy - 0.1 * ay), _ax(ax * 1.22, ay * 1.12), 0, 0, 360,
                        255, -1, cv2.LINE_AA, sh)
        elif ident.hair_style in (0, 3):
            cv2.ellipse(img, _pt(cx, cy - 0.25 * ay), _ax(ax * 1.1, ay * 0.9), 0, 180, 360,
                        hair.tolist(), -1, cv2.LINE_AA, sh)
            cv2.ellipse(alpha, _pt(cx, cy - 0.25 * ay), _ax(ax * 1.1, ay * 0.9), 0, 180, 360,
                        255, -1, cv2.LINE_AA, sh)
        # neck and ears
        neck = (skin * 0.78).tolist()
        cv2.rectangle(img, (int(cx - ax * 0.5), int(cy + ay * 0.5)), (int(cx + ax * 0.5), C),
                      neck, -1)
        cv2.rectangle(alpha, (int(cx - ax * 0.5), int(cy + ay * 0.5)), (int(cx + ax * 0.5), C),
                      255, -1)
        for sgn in (-1, 1):
            cv2.ellipse(img, _pt(cx + sgn * ax * 0.97, cy - 0.05 * ay), _ax(7, 12), 0, 0, 360,
                        (skin * 0.85).tolist(), -1, cv2.LINE_AA, sh)
            cv2.ellipse(alpha, _pt(cx + sgn * ax * 0.97, cy - 0.05 * ay), _ax(7, 12), 0, 0, 360,
                        255, -1, cv2.LINE_AA, sh)
        # face oval
        face = np.zeros((C, C), np.uint8)
        cv2.ellipse(face, _pt(cx, cy), _ax(ax, ay), 0, 0, 360, 255, -1, cv2.LINE_AA, sh)
        fm = face.astype(np.float32)[..., None] / 255.0
        img = img * (1 - fm) + skin * fm
        alpha = np.maximum(alpha, face)
        # shading: darker towards the rim, side lighting gradient
        u, v = (xx - cx) / ax, (yy - cy) / ay
        shade = 1.0 - 0.28 * u**2 - 0.12 * np.clip(v, 0, None) ** 2 + 0.18 * light * u
        # eye sockets darker, nose bridge and cheeks lighter
        self.eye_y = cy - 0.2 * ay
        for sgn in (-1, 1):
            ex = cx + sgn * ident.eye_dx
            d = ((xx - ex) / (ident.eye_w * 1.6)) ** 2 \
                + ((yy - self.eye_y + 2) / (ident.eye_w * 1.05)) ** 2
            shade -= 0.5 * np.exp(-d * 1.2)
            d = ((xx - (cx + sgn * ax * 0.55)) / (ax * 0.3)) ** 2 \
                + ((yy - cy - 0.15 * ay) / (ay * 0.2)) ** 2
            shade += 0.08 * np.exp(-d)
        d = ((xx - cx) / 5.5) ** 2 + ((yy - (cy - 0.02 * ay)) / (ay * 0.28)) ** 2
        shade += 0.14 * np.exp(-d)
        # dark skin reflects more of the light as highlights on forehead and cheeks
        dark = float(np.clip(1.0 - np.mean(skin) / 160.0, 0.0, 1.0))
        d = ((xx - cx) / (ax * 0.5)) ** 2 + ((yy - (cy - 0.5 * ay)) / (ay * 0.15)) ** 2
        shade += 0.35 * dark * np.exp(-d)
        img *= np.clip(shade, 0.25, 1.4)[..., None] * fm + (1 - fm)
        # nose shadow and nostrils
        ny = cy + 0.2 * ay
        cv2.ellipse(img, _pt(cx, ny + 1), _ax(7, 3), 0, 0, 180, (skin * 0.6).tolist(), -1,
                    cv2.LINE_AA, sh)
        for sgn in (-1, 1):
            cv2.ellipse(img, _pt(cx + sgn * 3.5, ny), _ax(2.2, 1.4), 0, 0, 360,
                        (skin * 0.35).tolist(), -1, cv2.LINE_AA, sh)
        # hairline over the forehead
        if ident.hair_style in (0, 1, 3):
            top = cy - ay * (0.76 if ident.hair_style != 3 else 0.72)
            cv2.ellipse(img, _pt(cx, top + ay * 0.05), _ax(ax * 1.02, ay * 0.32), 0, 180, 360,
                        hair.tolist(), -1, cv2.LINE_AA, sh)
        img = cv2.GaussianBlur(img, (3, 3), 0)
        self.base = np.clip(img, 0, 255).astype(np.uint8)
        self.alpha = cv2.GaussianBlur(alpha, (3, 3), 0)
        self.brow = tuple(float(c) for c in np.minimum(hair, skin * 0.4))
        white = np.array([228.0, 230.0, 235.0]) * (0.85 + 0.1 * light)
        self.sclera = tuple(float(c) for c in skin + (white - skin) * 0.5)

    def draw(self, valence: float, arousal: float, talk: float, blink: float,
             gaze: float) -> np.ndarray:
        """The face patch for one frame (uint8 [CANVAS, CANVAS, 3] BGR)."""
        idn = self.id
        img = self.base.copy()
        cx, cy, ax, ay = self.cx, self.cy, idn.face_ax, idn.face_ay
        a01 = (arousal + 1.0) / 2.0
        sh, aa = 2, cv2.LINE_AA
        # eyes: openness from arousal, blinks
        open_ = float(np.clip(0.4 + 0.45 * a01, 0.1, 1.0) * (1.0 - blink))
        ew = idn.eye_w
        eh = max(ew * 0.62 * open_, 0.6)
        for sgn in (-1, 1):
            ex, ey = cx + sgn * idn.eye_dx, self.eye_y
            cv2.ellipse(img, _pt(ex, ey), _ax(ew, eh), 0, 0, 360, self.sclera, -1, aa, sh)
            r = min(ew * 0.45, eh)
            cv2.circle(img, _pt(ex + gaze * 2.0, ey), int(r * 4), idn.iris_bgr, -1, aa, sh)
            cv2.circle(img, _pt(ex + gaze * 2.0, ey), int(r * 2), (10, 10, 10), -1, aa, sh)
            cv2.ellipse(img, _pt(ex, ey), _ax(ew + 0.5, eh + 0.5), 0, 180, 360, (20, 20, 25), 3,
                        aa, sh)
            # brows: height from arousal, inner-end slant from valence
            by = ey - 11.5 - 3.5 * a01 - idn.neutral_brow
            inner = by + 3.5 * max(-valence, 0.0) - 1.5 * max(valence, 0.0)
            outer = by + 1.5
            x_in, x_out = cx + sgn * (idn.eye_dx - ew * 0.8), cx + sgn * (idn.eye_dx + ew * 1.25)
            cv2.line(img, _pt(x_in, inner), _pt(x_out, outer), self.brow, 5, aa, sh)
        # mouth: curvature from valence, opening from arousal and speech
        my = cy + 0.5 * ay
        mw = ax * 0.42
        curv = float(np.clip(0.9 * valence + idn.neutral_smile, -1.2, 1.2)) * 7.0
        h = 0.8 + 2.5 * a01 + 9.0 * talk
        xs = np.linspace(-1.0, 1.0, 11)
        base = my - curv * xs**2 + curv * 0.35
        upper = base - 0.3 * h * (1 - xs**2)
        lower = base + 0.7 * h * (1 - xs**2)
        X = cx + xs * mw
        poly = np.stack([np.concatenate([X, X[::-1]]),
                         np.concatenate([upper, lower[::-1]])], 1) * 4
        cv2.fillPoly(img, [poly.round().astype(np.int32)], (35, 25, 45), aa, sh)
        lip = idn.lip_bgr
        cv2.polylines(img, [(np.stack([X, upper - 1], 1) * 4).round().astype(np.int32)], False,
                      lip, 3, aa, sh)
        cv2.polylines(img, [(np.stack([X, lower + 1.5], 1) * 4).round().astype(np.int32)], False,
                      lip, 4, aa, sh)
        return img


# ----------------------------------------------------------------------------- scene
def make_background(rng: np.random.Generator) -> np.ndarray:
    """Textured, cluttered static background (uint8 [H, W, 3] BGR)."""
    base = rng.uniform(40, 215, size=3)
    grid = rng.normal(0, 35, size=(6, 8, 3)).astype(np.float32)
    tex = cv2.resize(grid, (FRAME_W, FRAME_H), interpolation=cv2.INTER_CUBIC)
    bg = np.clip(base[None, None, :] + tex, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(5, 16))):
        col = tuple(int(c) for c in rng.uniform(0, 255, 3))
        kind = int(rng.integers(3))
        x, y = int(rng.integers(0, FRAME_W)), int(rng.integers(0, FRAME_H))
        if kind == 0:
            x1, y1 = x + int(rng.integers(10, 90)), y + int(rng.integers(10, 90))
            cv2.rectangle(bg, (x, y), (x1, y1), col, -1)
        elif kind == 1:
            cv2.circle(bg, (x, y), int(rng.integers(5, 30)), col, -1, cv2.LINE_AA)
        else:
            x1, y1 = int(rng.integers(0, FRAME_W)), int(rng.integers(0, FRAME_H))
            cv2.line(bg, (x, y), (x1, y1), col, int(rng.integers(1, 5)), cv2.LINE_AA)
    fine = rng.normal(0, 6, size=(FRAME_H, FRAME_W, 1))
    return np.clip(bg + fine, 0, 255).astype(np.uint8)


def pose_matrix(cx: float, cy: float, fx: float, fy: float, angle: float, scale: float,
                ) -> np.ndarray:
    """Affine canvas -> frame: rotate/scale about the face centre (cx, cy), move it to (fx, fy)."""
    m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    m[0, 2] += fx - cx
    m[1, 2] += fy - cy
    return m


def composite(frame: np.ndarray, patch: np.ndarray, alpha: np.ndarray, m: np.ndarray) -> None:
    """Warp the face patch with ``m`` and alpha-blend it into ``frame`` (in place)."""
    C = patch.shape[0]
    corners = np.array([[0, 0, 1], [C, 0, 1], [0, C, 1], [C, C, 1]], np.float64) @ m.T
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int)
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, frame.shape[1]), min(y1, frame.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    mm = m.copy()
    mm[0, 2] -= x0
    mm[1, 2] -= y0
    size = (x1 - x0, y1 - y0)
    p = cv2.warpAffine(patch, mm, size, flags=cv2.INTER_LINEAR)
    a = cv2.warpAffine(alpha, mm, size, flags=cv2.INTER_LINEAR)
    roi = frame[y0:y1, x0:x1]
    w = a.astype(np.float32)[..., None] * (1.0 / 255.0)
    roi[:] = (p * w + roi * (1.0 - w)).astype(np.uint8)


def draw_occluder(frame: np.ndarray, kind: int, fx: float, fy: float, s: float, ident: Identity,
                  color: tuple, wobble: float) -> None:
    """A large occluder over eyes and mouth (hand, board or cloth), in frame coordinates."""
    w = ident.face_ax * 2.3 * s
    top = fy - ident.face_ay * 0.55 * s + wobble
    bot = fy + ident.face_ay * 0.85 * s + wobble
    x0, x1 = fx - w / 2 + wobble, fx + w / 2 + wobble
    if kind == 0:  # hand: palm + fingers
        cv2.ellipse(frame, (int(fx + wobble), int((top + bot) / 2)),
                    (int(w * 0.5), int((bot - top) * 0.55)), 0, 0, 360, color, -1, cv2.LINE_AA)
        dark = tuple(int(c * 0.7) for c in color)
        for k in range(1, 4):
            xk = int(x0 + k * w / 4)
            cv2.line(frame, (xk, int(top)), (xk, int(top + (bot - top) * 0.45)), dark, 2,
                     cv2.LINE_AA)
    elif kind == 1:  # board with text-like lines
        cv2.rectangle(frame, (int(x0), int(top)), (int(x1), int(bot)), color, -1)
        for k in range(4):
            yk = int(top + (k + 1) * (bot - top) / 5)
            cv2.line(frame, (int(x0 + 8), yk), (int(x1 - 12), yk), (40, 40, 40), 2)
    else:  # cloth with stripes
        pts = np.array([[x0 - 6, top + 4], [x1 + 6, top - 4], [x1, bot], [x0, bot + 6]], np.int32)
        cv2.fillPoly(frame, [pts], color, cv2.LINE_AA)
        stripe = tuple(int(255 - c) for c in color)
        for k in range(3):
            yk = int(top + (k + 1) * (bot - top) / 4)
            cv2.line(frame, (int(x0), yk), (int(x1), yk + 5), stripe, 3, cv2.LINE_AA)

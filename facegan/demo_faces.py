"""A small embedded face dataset, drawn procedurally, so train.py runs on a fresh clone with no CelebA.

Each face varies in head shape and size, skin tone, hair colour and style, eye colour and spacing,
brows, nose, mouth (smile or neutral), background colour and gradient, and a small shift. It is a demo:
good for seeing a DCGAN learn in minutes on a CPU, not a stand-in for real faces.

    python -m facegan.demo_faces --n 64 --out demo.png     # look at some
"""
import argparse
from typing import NamedTuple

import cv2
import numpy as np

SKIN_TONES = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 130], [198, 134, 90],
                       [161, 102, 64], [110, 70, 45], [236, 188, 180]], np.float32)  # RGB
HAIR_COLOURS = np.array([[20, 15, 10], [60, 40, 25], [110, 70, 35], [200, 160, 90],
                         [150, 60, 30], [130, 130, 130], [235, 225, 200]], np.float32)
EYE_COLOURS = np.array([[60, 40, 20], [40, 90, 150], [60, 120, 70], [90, 70, 50]], np.float32)
# Muted studio backdrops, like most portrait photos; fully random colours made the demo far harder to learn.
BACKGROUNDS = np.array([[200, 200, 200], [90, 90, 95], [215, 200, 175], [150, 175, 205], [170, 190, 160],
                        [235, 235, 230], [40, 40, 45], [120, 100, 90]], np.float32)
CLOTHES = np.array([[30, 30, 35], [240, 240, 240], [40, 60, 110], [120, 30, 30], [90, 90, 90],
                    [60, 90, 60]], np.float32)


def _jitter(rng, colour, amount=18):
    return tuple(float(c) for c in np.clip(colour + rng.normal(0, amount, 3), 0, 255)[::-1])  # RGB -> BGR


class _Pen(NamedTuple):
    """Where a face is drawn: its centre (cx, cy) on the 4x canvas, and u, one pixel of a 64 px image there."""
    cx: float
    cy: float
    u: float

    def pt(self, x, y):
        """The canvas point (x, y) units from the face's centre."""
        return int(round(self.cx + x * self.u)), int(round(self.cy + y * self.u))

    def axes(self, a, b):
        """An ellipse's half-axes of a and b units, at least one canvas pixel each."""
        return max(1, int(round(a * self.u))), max(1, int(round(b * self.u)))


def draw_face(rng, size=64):
    """One face as RGB uint8 (size, size, 3); drawn at 4x and reduced with area interpolation (anti-aliasing).
    The parts are drawn back to front, each drawing its own random choices in turn from `rng`."""
    s = 4 * size
    u = s / 64.0  # drawing unit: one pixel of a 64 px image
    canvas = _backdrop(rng, s)
    pen = _Pen(s / 2 + rng.normal(0, 2.5) * u, s / 2 + rng.normal(2, 2.5) * u, u)
    face_w = rng.uniform(15, 20) * u
    face_h = face_w * rng.uniform(1.15, 1.4)
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))]
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))]
    skin_bgr, hair_bgr = _jitter(rng, skin, 12), _jitter(rng, hair, 15)
    shadow_bgr = tuple(c * 0.8 for c in skin_bgr)
    _draw_head(rng, canvas, pen, (face_w, face_h), skin_bgr, hair_bgr, shadow_bgr)
    eye_y = _draw_eyes(rng, canvas, pen, hair_bgr)
    _draw_nose_and_mouth(rng, canvas, pen, eye_y, shadow_bgr)
    small = cv2.resize(np.clip(canvas, 0, 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def _backdrop(rng, s):
    """An s x s BGR float canvas: a backdrop colour fading vertically to a darker or lighter shade."""
    top = BACKGROUNDS[rng.integers(len(BACKGROUNDS))] + rng.normal(0, 12, 3)
    bottom = top * rng.uniform(0.7, 1.1)
    ramp = np.linspace(0, 1, s, dtype=np.float32)[:, None, None]
    canvas = ((1 - ramp) * top + ramp * bottom)[:, :, ::-1] * np.ones((1, s, 1), np.float32)
    return np.ascontiguousarray(canvas)


def _draw_head(rng, canvas, pen, face_size, skin_bgr, hair_bgr, shadow_bgr):
    """Hair (short, long or bald-ish), neck and shoulders in a shirt, ears and the head."""
    (face_w, face_h), pt, axes = face_size, pen.pt, pen.axes
    hair_style = rng.integers(3)  # 0 short, 1 long, 2 bald-ish
    if hair_style == 1:  # long hair falls behind the shoulders
        cv2.ellipse(canvas, pt(0, 6), (int(face_w * 1.35), int(face_h * 1.25)), 0, 0, 360, hair_bgr, -1, cv2.LINE_AA)
    # neck and shoulders
    cv2.rectangle(canvas, pt(-6, 14), pt(6, 40), shadow_bgr, -1, cv2.LINE_AA)
    shirt = _jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 15)
    cv2.ellipse(canvas, pt(0, 44), axes(rng.uniform(26, 34), 16), 0, 180, 360, shirt, -1, cv2.LINE_AA)
    if hair_style != 2:  # hair cap behind the forehead
        cv2.ellipse(canvas, pt(0, -4), (int(face_w * 1.12), int(face_h * 1.05)), 0, 180, 360, hair_bgr, -1,
                    cv2.LINE_AA)
    # ears and head
    for side in (-1, 1):
        cv2.ellipse(canvas, (int(pen.cx + side * face_w), int(pen.cy)), axes(3, 5), 0, 0, 360, shadow_bgr, -1,
                    cv2.LINE_AA)
    cv2.ellipse(canvas, (int(pen.cx), int(pen.cy)), (int(face_w), int(face_h)), 0, 0, 360, skin_bgr, -1, cv2.LINE_AA)
    if hair_style != 2:  # fringe over the forehead
        fringe = rng.uniform(0.35, 0.6)
        cv2.ellipse(canvas, (int(pen.cx), int(pen.cy - face_h * 0.55)), (int(face_w * 1.02), int(face_h * fringe)),
                    rng.normal(0, 8), 180, 360, hair_bgr, -1, cv2.LINE_AA)


def _draw_eyes(rng, canvas, pen, hair_bgr):
    """Two eyes looking the same way, with brows in a darker shade of the hair; returns the eyes' height."""
    pt, axes, u = pen.pt, pen.axes, pen.u
    eye_dx, eye_y = rng.uniform(6, 8.5), rng.uniform(-3, 0)
    eye_colour = _jitter(rng, EYE_COLOURS[rng.integers(len(EYE_COLOURS))], 10)
    gaze = rng.normal(0, 0.6)
    brow_tilt = rng.normal(0, 6)
    for side in (-1, 1):
        cv2.ellipse(canvas, pt(side * eye_dx, eye_y), axes(3.2, 1.9), 0, 0, 360, (245, 245, 245), -1, cv2.LINE_AA)
        cv2.circle(canvas, pt(side * eye_dx + gaze, eye_y), int(1.6 * u), eye_colour, -1, cv2.LINE_AA)
        cv2.circle(canvas, pt(side * eye_dx + gaze, eye_y), int(0.8 * u), (10, 10, 10), -1, cv2.LINE_AA)
        cv2.ellipse(canvas, pt(side * eye_dx, eye_y - 3.5), axes(3.8, 1.2), side * brow_tilt, 180, 360,
                    tuple(c * 0.7 for c in hair_bgr), max(1, int(1.1 * u)), cv2.LINE_AA)
    return eye_y


def _draw_nose_and_mouth(rng, canvas, pen, eye_y, shadow_bgr):
    """A nose below the eyes, then a smile arc, a neutral line or an open smile."""
    pt, axes, u = pen.pt, pen.axes, pen.u
    # nose: a soft shadow line and nostrils
    nose_len = rng.uniform(4, 7)
    cv2.line(canvas, pt(0.5, eye_y + 1), pt(1, eye_y + nose_len), shadow_bgr, max(1, int(0.9 * u)), cv2.LINE_AA)
    cv2.ellipse(canvas, pt(0, eye_y + nose_len), axes(2.2, 1.2), 0, 0, 180, shadow_bgr, max(1, int(0.8 * u)),
                cv2.LINE_AA)
    mouth_y, mouth_w = eye_y + nose_len + rng.uniform(4, 6), rng.uniform(3.5, 6)
    lips = _jitter(rng, np.array([170, 70, 70]), 20)
    kind = rng.integers(3)
    if kind == 0:
        cv2.ellipse(canvas, pt(0, mouth_y - 1.5), axes(mouth_w, 2.5), 0, 20, 160, lips, max(1, int(1.2 * u)),
                    cv2.LINE_AA)
    elif kind == 1:
        cv2.line(canvas, pt(-mouth_w, mouth_y), pt(mouth_w, mouth_y), lips, max(1, int(1.2 * u)), cv2.LINE_AA)
    else:
        cv2.ellipse(canvas, pt(0, mouth_y - 0.5), axes(mouth_w, 2.5), 0, 0, 180, (40, 20, 30), -1, cv2.LINE_AA)
        cv2.ellipse(canvas, pt(0, mouth_y - 0.5), axes(mouth_w, 2.5), 0, 0, 180, lips, max(1, int(0.8 * u)),
                    cv2.LINE_AA)


def make_demo_faces(n, size=64, seed=0):
    """n procedurally drawn faces, uint8 (n, size, size, 3) RGB, the same for the same seed."""
    rng = np.random.default_rng(seed)
    return np.stack([draw_face(rng, size) for _ in range(n)])


def main():
    from facegan import data_io
    parser = argparse.ArgumentParser(description="Draw demo faces and save them as a PNG grid (or .npy).")
    parser.add_argument("--n", type=int, default=64, help="number of faces")
    parser.add_argument("--size", type=int, default=64, help="side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--out", default="demo_faces.png", help="output .png grid or .npy array")
    args = parser.parse_args()
    faces = make_demo_faces(args.n, args.size, args.seed)
    if args.out.endswith(".npy"):
        data_io.save_npy(args.out, faces)
    else:
        data_io.save_grid(args.out, faces, scale=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

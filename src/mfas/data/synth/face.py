"""A parametric 3D face: identity, expression and pose -> height field, regions and materials.

The face lives in local coordinates (u, v) with u across and v down, the face ellipse about
0.7 wide and 1.0 tall. Its relief ``h(u, v)`` (same units, towards the camera) is an ellipsoidal
head plus Gaussian features: nose ridge and tip, eye sockets, brow ridge, cheekbones, lips, chin,
and a layer of fine relief (nasolabial folds, eyelids, philtrum, skin micro-relief) that rigid
masks lack. Pose (yaw, pitch, roll) is applied by solving for the visible surface point.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mfas.data.synth.scene import Layer, grid

# Skin reflectance anchors (visible RGB) from light to dark skin, and hair colours.
SKIN_TONES = np.array([[0.93, 0.78, 0.67], [0.87, 0.68, 0.55], [0.76, 0.56, 0.42],
                       [0.60, 0.42, 0.30], [0.42, 0.29, 0.20], [0.30, 0.20, 0.14]], np.float32)
HAIR_COLOURS = np.array([[0.05, 0.04, 0.03], [0.20, 0.12, 0.06], [0.45, 0.30, 0.15],
                         [0.70, 0.55, 0.30], [0.55, 0.55, 0.55]], np.float32)
IRIS_COLOURS = np.array([[0.25, 0.15, 0.08], [0.35, 0.25, 0.12], [0.30, 0.45, 0.60],
                         [0.35, 0.45, 0.30]], np.float32)


@dataclass
class Identity:
    """Who the person is: shape and appearance that stay fixed across captures."""

    width: float
    height: float
    jaw: float
    head_depth: float
    nose_len: float
    nose_height: float
    nose_width: float
    eye_gap: float
    eye_depth: float
    brow: float
    cheek: float
    lips: float
    chin: float
    skin: np.ndarray  # (3,) visible albedo
    skin_nir: float
    hair: np.ndarray  # (3,)
    hairline: float
    iris: np.ndarray  # (3,)
    blush: float  # blood perfusion: redness of cheeks and lips
    seed: int

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Identity:
        t = rng.uniform(0, len(SKIN_TONES) - 1)
        i = int(t)
        skin = SKIN_TONES[i] * (1 - (t - i)) + SKIN_TONES[min(i + 1, len(SKIN_TONES) - 1)] * (t - i)
        skin = np.clip(skin * rng.normal(1, 0.03, 3), 0.05, 1).astype(np.float32)
        return cls(
            width=rng.uniform(0.62, 0.76), height=rng.uniform(0.92, 1.08), jaw=rng.uniform(0.15, 0.45),
            head_depth=rng.uniform(0.55, 0.75), nose_len=rng.uniform(0.35, 0.5),
            nose_height=rng.uniform(0.16, 0.28), nose_width=rng.uniform(0.07, 0.11),
            eye_gap=rng.uniform(0.23, 0.3), eye_depth=rng.uniform(0.06, 0.12), brow=rng.uniform(0.03, 0.07),
            cheek=rng.uniform(0.02, 0.06), lips=rng.uniform(0.025, 0.05), chin=rng.uniform(0.02, 0.06),
            skin=skin,
            # skin reflects strongly around 850 nm whatever its visible tone
            skin_nir=float(rng.uniform(0.62, 0.78) + 0.08 * (skin.mean() - 0.5)),
            hair=HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.8, 1.2),
            hairline=rng.uniform(-0.78, -0.55), iris=IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))],
            blush=rng.uniform(0.04, 0.12), seed=int(rng.integers(2**31)),
        )

    @classmethod
    def generic(cls, rng: np.random.Generator) -> Identity:
        """An average face, as a rigid mask's mould is."""
        base = cls.sample(rng)
        for name, v in (("width", 0.69), ("height", 1.0), ("jaw", 0.3), ("head_depth", 0.62),
                        ("nose_len", 0.42), ("nose_height", 0.2), ("nose_width", 0.09), ("eye_gap", 0.265),
                        ("eye_depth", 0.07), ("brow", 0.04), ("cheek", 0.04), ("lips", 0.03), ("chin", 0.04)):
            setattr(base, name, v * float(rng.uniform(0.95, 1.05)))
        return base


@dataclass
class Capture:
    """How the face is presented this time: pose, expression, framing."""

    yaw: float  # radians
    pitch: float
    roll: float
    smile: float
    mouth_open: float
    brow_raise: float
    cx: float  # face centre in the crop
    cy: float
    scale: float  # face size in the crop

    @classmethod
    def sample(cls, rng: np.random.Generator, max_yaw: float = 20, max_pitch: float = 12,
               jitter: float = 0.05) -> Capture:
        return cls(yaw=np.radians(rng.uniform(-max_yaw, max_yaw)), pitch=np.radians(rng.uniform(-max_pitch, max_pitch)),
                   roll=np.radians(rng.normal(0, 4)), smile=rng.uniform(0, 1), mouth_open=rng.uniform(0, 0.4) ** 2,
                   brow_raise=rng.uniform(0, 1), cx=rng.normal(0, jitter), cy=rng.normal(0.05, jitter),
                   scale=rng.uniform(0.85, 1.0))


def _g(u: np.ndarray, v: np.ndarray, cu: float, cv: float, su: float, sv: float) -> np.ndarray:
    return np.exp(-(((u - cu) / su) ** 2 + ((v - cv) / sv) ** 2) / 2)


def relief(ident: Identity, cap: Capture, u: np.ndarray, v: np.ndarray, fine: float = 1.0) -> np.ndarray:
    """Height of the face surface above its base plane at local (u, v)."""
    a = ident.width * (1 - ident.jaw * np.clip(v, 0, None) ** 2)
    r2 = (u / a) ** 2 + (v / ident.height) ** 2
    h = ident.head_depth * np.sqrt(np.clip(1 - r2, 0, None))
    # nose: a ridge that grows towards the tip, and the tip itself
    t = np.clip((v + 0.25) / ident.nose_len, 0, 1)
    h += ident.nose_height * t**1.5 * np.exp(-(u / (ident.nose_width * (0.6 + 0.6 * t))) ** 2 / 2) \
        * (v < -0.25 + ident.nose_len + 0.05)
    h += 0.5 * ident.nose_height * _g(u, v, 0, -0.25 + ident.nose_len, 0.07, 0.05)
    for s in (-1, 1):
        e = s * ident.eye_gap
        h -= ident.eye_depth * _g(u, v, e, -0.2, 0.13, 0.09)  # socket
        h += 0.35 * ident.eye_depth * _g(u, v, e, -0.2, 0.06, 0.04)  # eyeball
        h += ident.cheek * _g(u, v, 0.75 * s * ident.width, 0.08, 0.14, 0.12)
        h += 0.6 * ident.nose_height * 0.25 * _g(u, v, s * 0.09, 0.16, 0.04, 0.035)  # alae
    h += ident.brow * (1 + 0.4 * cap.brow_raise) * _g(u, v, 0, -0.37 - 0.03 * cap.brow_raise, 0.35, 0.06)
    mouth_y = 0.45 + 0.05 * cap.mouth_open
    h += ident.lips * _g(u, v, 0, mouth_y - 0.035, 0.14, 0.03) + ident.lips * _g(u, v, 0, mouth_y + 0.04, 0.12, 0.035)
    h -= 0.05 * cap.mouth_open * _g(u, v, 0, mouth_y, 0.1, 0.02 + 0.05 * cap.mouth_open)
    h += ident.chin * _g(u, v, 0, 0.82, 0.16, 0.08)
    if fine:
        f = np.zeros_like(u)
        for s in (-1, 1):
            f -= 0.012 * _g((u - s * (0.14 + 0.1 * (v - 0.2))), v, 0, 0.28, 0.015, 0.12) * (0.5 + cap.smile)
            f += 0.008 * _g(u, v, s * ident.eye_gap, -0.27, 0.08, 0.015)  # upper eyelid fold
            f -= 0.006 * _g(u, v, s * ident.eye_gap, -0.12, 0.07, 0.012)  # lower lid
        f -= 0.006 * _g(u, v, 0, 0.36, 0.02, 0.04)  # philtrum
        rng = np.random.default_rng(ident.seed)
        ph = rng.uniform(0, 2 * np.pi, 6)
        for k in range(6):  # micro-relief: a few oriented ripples
            f += 0.0025 * np.sin(40 * (np.cos(ph[k]) * u + np.sin(ph[k]) * v) + ph[(k + 1) % 6])
        h += fine * f
    return h * (r2 < 1)


def regions(ident: Identity, cap: Capture, u: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    """Soft masks in [0, 1] of the face's parts in local coordinates."""
    a = ident.width * (1 - ident.jaw * np.clip(v, 0, None) ** 2)
    r2 = (u / a) ** 2 + (v / ident.height) ** 2
    face = np.clip((1 - r2) * 12, 0, 1)
    head = np.clip((1 - ((u / (ident.width * 1.18)) ** 2 + ((v + 0.12) / (ident.height * 1.12)) ** 2)) * 8, 0, 1)
    hair = head * np.clip((ident.hairline - v) * 12 + (np.abs(u) > ident.width * 0.93) * (v < 0.1) * 2, 0, 1)
    hair = np.maximum(hair, head * (1 - face) * (v < 0.15))
    out = {"face": face, "head": head, "hair": np.clip(hair, 0, 1)}
    eye = np.zeros_like(u)
    iris = np.zeros_like(u)
    pupil = np.zeros_like(u)
    brows = np.zeros_like(u)
    cheeks = np.zeros_like(u)
    for s in (-1, 1):
        e = s * ident.eye_gap
        eye = np.maximum(eye, np.clip((1 - ((u - e) / 0.085) ** 2 - ((v + 0.2) / 0.035) ** 2) * 4, 0, 1))
        d = np.sqrt((u - e - 0.3 * np.sin(cap.yaw) * 0.05) ** 2 + (v + 0.2) ** 2)
        iris = np.maximum(iris, np.clip((0.033 - d) * 150, 0, 1))
        pupil = np.maximum(pupil, np.clip((0.013 - d) * 250, 0, 1))
        by = -0.31 - 0.035 * cap.brow_raise
        brows = np.maximum(brows, np.clip((1 - ((u - e) / 0.11) ** 2 - ((v - by) / 0.018) ** 2) * 3, 0, 1))
        cheeks = np.maximum(cheeks, _g(u, v, 0.55 * s * ident.width, 0.12, 0.1, 0.08))
    mouth_y = 0.45 + 0.05 * cap.mouth_open
    curve = -0.25 * cap.smile * u**2  # a smile lifts the corners
    lip_w, lip_h = 0.13 + 0.02 * cap.smile, 0.05 + 0.03 * cap.mouth_open
    lips = np.clip((1 - (u / lip_w) ** 2 - ((v - mouth_y - curve) / lip_h) ** 2) * 4, 0, 1)
    gap = np.clip((1 - (u / 0.1) ** 2 - ((v - mouth_y - curve) / (0.004 + 0.03 * cap.mouth_open)) ** 2) * 4, 0, 1)
    out.update(eye=eye * face, iris=iris * eye * face, pupil=pupil * eye * face, brows=brows * face,
               lips=lips * face, mouth=gap * face, cheeks=cheeks * face)
    return out


def to_local(cap: Capture, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undo framing and roll: crop coordinates -> face coordinates before yaw/pitch."""
    xs, ys = (x - cap.cx) / cap.scale, (y - cap.cy) / cap.scale
    c, s = np.cos(cap.roll), np.sin(cap.roll)
    return c * xs + s * ys, -s * xs + c * ys


def surface(ident: Identity, cap: Capture, res: int, fine: float = 1.0, iters: int = 3):
    """Visible face surface under pose: local coords (u, v) and height h per pixel of the crop.

    The relief is evaluated once on a lattice in face coordinates and looked up bilinearly while
    solving ``us = u cos(yaw) + h sin(yaw)`` (and the same for pitch) by fixed-point iteration.
    """
    x, y = grid(res)
    us, vs = to_local(cap, x, y)
    cy_, sy_ = np.cos(cap.yaw), np.sin(cap.yaw)
    cp_, sp_ = np.cos(cap.pitch), np.sin(cap.pitch)
    n = max(res, 128)
    lu, lv = 1.3, 1.4
    gu, gv = np.meshgrid(np.linspace(-lu, lu, n, dtype=np.float32), np.linspace(-lv, lv, n, dtype=np.float32))
    table = relief(ident, cap, gu, gv, fine).astype(np.float32)

    def look(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        mx = ((u + lu) / (2 * lu) * (n - 1)).astype(np.float32)
        my = ((v + lv) / (2 * lv) * (n - 1)).astype(np.float32)
        return cv2.remap(table, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    u, v = us / cy_, vs / cp_
    h = look(u, v)
    for _ in range(iters):
        u = (us - h * sy_) / cy_
        v = (vs - h * sp_) / cp_
        h = look(u, v)
    depth_rel = h * cy_ * cp_ - u * sy_ * 0.3 - v * sp_ * 0.3  # towards the camera, in crop units
    return u, v, depth_rel * cap.scale


def face_layer(ident: Identity, cap: Capture, res: int, distance: float, rng: np.random.Generator,
               fine: float = 1.0, neck: bool = True) -> tuple[Layer, dict[str, np.ndarray]]:
    """A live face as a scene layer (with hair and neck) and its region masks."""
    u, v, hrel = surface(ident, cap, res, fine)
    reg = regions(ident, cap, u, v)
    x, y = grid(res)
    z = distance - hrel * 0.1
    # hair sits a little proud of the skull
    z = z - reg["hair"] * (1 - reg["face"]) * 0.01 - reg["hair"] * 0.004
    skull = reg["head"] > 0.5
    dome = np.sqrt(np.clip(1 - (u / (ident.width * 1.18)) ** 2 - ((v + 0.12) / (ident.height * 1.12)) ** 2, 0, 1))
    z = np.where(skull & (reg["face"] < 0.5), distance - 0.1 * 0.55 * ident.head_depth * cap.scale * dome, z)
    mask = np.maximum(reg["head"], reg["face"])
    if neck:  # neck and shoulders, which a depth camera sees as much as the face
        nk = np.clip((0.32 * cap.scale - np.abs(x - cap.cx)) * 30, 0, 1) * (y > cap.cy + 0.55 * cap.scale)
        sh_w = 0.32 * cap.scale + np.clip(y - cap.cy - 1.05 * cap.scale, 0, None) * 3.0
        sh = np.clip((sh_w - np.abs(x - cap.cx)) * 30, 0, 1) * (y > cap.cy + 1.05 * cap.scale)
        body = np.maximum(nk, sh)
        mask = np.maximum(mask, body)
        z = np.where((body > 0) & (reg["face"] < 0.5) & (reg["head"] < 0.5),
                     distance + 0.02 + 0.04 * np.clip(np.abs(x - cap.cx) - 0.3 * cap.scale, 0, None), z)
        reg["body"] = body * (reg["face"] < 0.5) * (reg["head"] < 0.5)
    # visible albedo: skin with perfusion, features painted by region
    alb = np.broadcast_to(ident.skin, (res, res, 3)).copy()
    red = np.array([0.1, -0.04, -0.04], np.float32)
    alb += (reg["cheeks"] * ident.blush * 1.5)[..., None] * red
    mottling = rng.normal(0, 0.02, (res // 4 + 1, res // 4 + 1)).repeat(4, 0).repeat(4, 1)[:res, :res]
    alb *= (1 + mottling)[..., None]
    lip_col = ident.skin * np.array([0.85, 0.55, 0.55]) + ident.blush * np.array([0.3, 0.0, 0.0])

    def paint(a, m, col):
        return a * (1 - m[..., None]) + m[..., None] * np.asarray(col, np.float32)

    alb = paint(alb, reg["lips"], lip_col)
    alb = paint(alb, reg["brows"] * 0.85, ident.hair * 0.8)
    alb = paint(alb, reg["eye"], [0.85, 0.82, 0.8])
    alb = paint(alb, reg["iris"], ident.iris)
    alb = paint(alb, reg["pupil"], [0.03, 0.03, 0.03])
    alb = paint(alb, reg["mouth"], [0.2, 0.06, 0.06])
    strands = 1 + 0.2 * np.sin(70 * x + 6 * np.sin(11 * y) + ident.seed % 7)
    h = reg["hair"][..., None]
    alb = alb * (1 - h) + h * (ident.hair * strands[..., None])
    if "body" in reg:
        cloth = rng.uniform(0.1, 0.8, 3).astype(np.float32)
        shoulders = (reg["body"] * (y > cap.cy + 0.95 * cap.scale))[..., None]
        alb = alb * (1 - shoulders) + shoulders * cloth
    # NIR: skin is bright and smooth (sub-surface scattering), eyes and hair darker, pupils black
    nir = np.full((res, res), ident.skin_nir, np.float32)
    nir = nir * (1 - 0.35 * reg["eye"]) * (1 - 0.5 * reg["pupil"]) * (1 - 0.15 * reg["brows"])
    nir = nir * (1 - 0.55 * reg["hair"]) * (1 - 0.6 * reg["mouth"])
    spec = (0.06 + 0.5 * reg["eye"] * (1 - reg["pupil"] * 0.5)) * (1 - reg["hair"])
    layer = Layer(z=z.astype(np.float32), albedo_rgb=np.clip(alb, 0, 1).astype(np.float32),
                  albedo_nir=np.clip(nir, 0, 1).astype(np.float32), specular=spec.astype(np.float32),
                  shininess=(12 + 60 * reg["eye"]).astype(np.float32), emit_rgb=np.zeros((res, res, 3), np.float32),
                  depth_ok=(reg["hair"] < 0.7) | (ident.hair.mean() > 0.25) | (rng.random() < 0.5)).with_normals(res)
    reg["mask"] = mask
    return layer, reg

"""Scenes for bona fide presentations and for each PAI species, with the cues each sensor sees. The
instruments' materials come from the domain profile (``DomainProfile.instrument``; defaults in
``mfas.data.synth.domains.INSTRUMENTS``).

=================  ==================  =======================  ==============================
species            depth               NIR                      RGB
=================  ==================  =======================  ==============================
``print``          flat or bent sheet  paper bright, only       halftone, compressed range,
                                       carbon ink darkens       paper edge, baked-in lighting
``replay``         flat screen, holes  no NIR from the panel;   emissive, pixel grid, moire,
                   at the glare        emitter glint on glass   glare, bezel
``cut``            sheet + real relief real skin/eyes in holes  print with real eyes
                   in the holes
``mask_rigid``     face-like, generic  uniform resin, eyes      plastic sheen, painted
                   (or the victim's),  only through holes       features, no perfusion
                   no fine relief
``mask_flexible``  realistic, edge     silicone darker than     skin-like, less perfusion,
                   step at its rim     skin, textured; seam     seam at the edge
``mask_paper``     a smoothed face     as print; real eyes      as print, worn over a face;
                   (paper on a face)   through cut-out holes    the wearer's hair around it
``partial``        real face, plane    printed eyes: no dark    printed eyes on glasses
                   over the eyes       pupils; dark frame;      with a frame
                                       emitter glint on lenses
=================  ==================  =======================  ==============================

Bona fide subjects may wear their own glasses (``bonafide.glasses``): a frame in every modality, a glint on
clear lenses, real eyes behind them. Where no source domain has such subjects, a model may learn "glasses
mean a partial attack", which the domain with them then punishes.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from mfas.data.synth.domains import DomainProfile
from mfas.data.synth.face import Capture, Identity, face_layer
from mfas.data.synth.scene import Layer, grid, normals_from_z
from mfas.data.synth.sensors import Lighting, camera, shade_rgb


def chance(rng: np.random.Generator, prof: DomainProfile, species: str, key: str) -> bool:
    """A per-presentation yes/no with the domain's probability ``instrument(species, key)[0]``. Nothing is drawn
    at probability 0, so domains without the instrument keep the random stream (and the images) they had."""
    p = prof.instrument(species, key)[0]
    return p > 0 and bool(rng.random() < p)


def background(res: int, rng: np.random.Generator, style: str, wall: tuple[float, float] = (1.6, 3.0)) -> Layer:
    x, y = grid(res)
    base = rng.uniform(0.15, 0.75, 3).astype(np.float32)
    if style == "dark":
        base *= 0.35
    layer = Layer.background(res, float(rng.uniform(*wall)), base, float(rng.uniform(0.2, 0.6)))
    if style in ("gradient", "texture"):
        ang = rng.uniform(0, 2 * np.pi)
        ramp = 1 + 0.3 * (np.cos(ang) * x + np.sin(ang) * y)
        layer.albedo_rgb = layer.albedo_rgb * ramp[..., None]
    if style == "texture":
        blocks = rng.uniform(0.7, 1.3, (6, 6, 3)).astype(np.float32)
        tex = cv2.resize(blocks, (res, res), interpolation=cv2.INTER_NEAREST)
        layer.albedo_rgb = np.clip(layer.albedo_rgb * tex, 0, 1)
        layer.albedo_nir = layer.albedo_nir * tex.mean(-1)
    return layer


def photo(ident: Identity, rng: np.random.Generator, res: int) -> np.ndarray:
    """An earlier photo or video frame of the subject (linear RGB, res x res x 3)."""
    cap = Capture.sample(rng, max_yaw=10, max_pitch=8, jitter=0.03)
    face, reg = face_layer(ident, cap, res, 0.6, rng)
    scene = face.over(background(res, rng, str(rng.choice(["flat", "gradient", "texture"]))), reg["mask"])
    light = Lighting.sample(rng, ambient=(0.4, 0.7))
    img = shade_rgb(scene.with_normals(res), light)
    img = camera(img, res, rng, blur=0.6, noise=0.01, jpeg=(70, 95))
    return (img.astype(np.float32) / 255.0) ** 2.2


def sheet_z(res: int, rng: np.random.Generator, distance: float, bend: float = 0.0) -> np.ndarray:
    """A tilted sheet; ``bend`` > 0 curves it round a vertical axis, towards the camera at the middle."""
    x, y = grid(res)
    tx, ty = rng.normal(0, 0.3, 2)
    z = distance + 0.1 * (tx * x + ty * y)
    if bend:
        z = z + 0.1 * bend * x**2
    return z.astype(np.float32)


def halftone(res: int, rng: np.random.Generator, depth: tuple[float, float] = (0.06, 0.16)) -> np.ndarray:
    """A rotated dot screen beating against the sensor grid (moire), as a multiplicative pattern."""
    x, y = grid(res)
    th = rng.uniform(0, np.pi / 2)
    f = rng.uniform(0.3, 0.48) * res / 2  # cycles per unit, close to the sampling limit
    a, b = np.cos(th) * x + np.sin(th) * y, -np.sin(th) * x + np.cos(th) * y
    dots = 0.5 + 0.5 * np.cos(2 * np.pi * f * a) * np.cos(2 * np.pi * f * b)
    return (1 - rng.uniform(*depth) * dots).astype(np.float32)


def printed(img: np.ndarray, rng: np.random.Generator, carbon: tuple[float, float] = (0.15, 0.6),
            dots: tuple[float, float] = (0.06, 0.16)) -> tuple[np.ndarray, np.ndarray]:
    """Ink on paper: returns visible reflectance and NIR reflectance (carbon-black only absorbs NIR); ``carbon``
    is the range of the ink's carbon share (laser toner absorbs NIR strongly, dye inks hardly at all), ``dots``
    the range of the halftone screen's depth (photo printers hide it, office printers do not)."""
    res = img.shape[0]
    lum = img.mean(-1, keepdims=True)
    sat = rng.uniform(0.55, 0.9)
    ink = lum + (img - lum) * sat
    ink = 0.06 + rng.uniform(0.7, 0.85) * ink ** rng.uniform(0.9, 1.2)
    ink = ink * halftone(res, rng, dots)[..., None]
    ink = ink * rng.normal(1, 0.03, 3).astype(np.float32)
    grain = 1 + rng.normal(0, 0.02, (res, res)).astype(np.float32)
    paper_nir = rng.uniform(0.7, 0.9)
    c = rng.uniform(*carbon)
    nir = paper_nir * (1 - c * (1 - lum[..., 0]) ** 1.5) * grain
    return np.clip(ink * grain[..., None], 0, 1), np.clip(nir, 0, 1).astype(np.float32)


def paper_rect(res: int, rng: np.random.Generator, cap: Capture) -> np.ndarray:
    """Soft mask of the sheet: larger than the face, its edge visible in about half the captures."""
    x, y = grid(res)
    if rng.random() < 0.35:
        return np.ones((res, res), np.float32)
    hw, hh = rng.uniform(0.7, 1.1) * cap.scale, rng.uniform(0.9, 1.3) * cap.scale
    m = np.minimum(np.clip((hw - np.abs(x - cap.cx)) * res, 0, 1), np.clip((hh - np.abs(y - cap.cy)) * res, 0, 1))
    return m.astype(np.float32)


def live(ident: Identity, rng: np.random.Generator, prof: DomainProfile, res: int, dist: float,
         cap: Capture | None = None) -> tuple[Layer, dict]:
    cap = cap or Capture.sample(rng, prof.max_yaw, prof.max_pitch, prof.crop_jitter)
    face, reg = face_layer(ident, cap, res, dist, rng)
    if prof.nir_skin != 1.0:
        face.albedo_nir = (face.albedo_nir * prof.nir_skin).astype(np.float32)
    return face.over(background(res, rng, prof.background, prof.wall), reg["mask"]), reg


def own_glasses(person: Layer, reg: dict, rng: np.random.Generator, res: int) -> Layer:
    """``person`` wearing their own glasses: a frame in front of the eyes, clear lenses that show a glint of the
    emitter; the depth camera sees through the glass to the real eyes and returns the frame only."""
    lens = int(round(max(3, res // 14) * rng.uniform(1.3, 1.9)))
    eyes = cv2.dilate((reg["eye"] > 0.05).astype(np.uint8), np.ones((lens, lens), np.uint8))
    if not eyes.any():
        return person
    rim = max(2, res // 40)
    frame = (eyes > 0) & (cv2.erode(eyes, np.ones((rim, rim), np.uint8)) == 0)
    lenses = (eyes > 0) & ~frame
    copies = {f.name: getattr(person, f.name) for f in dataclasses.fields(person)}
    out = Layer(**{k: None if v is None else v.copy() for k, v in copies.items()})
    out.z[frame] = float(np.percentile(person.z[eyes > 0], 10)) - rng.uniform(0.008, 0.02)
    out.albedo_rgb[frame] = rng.uniform(0.0, 0.5) * rng.uniform(0.8, 1.0, 3)
    out.albedo_nir[frame] = rng.uniform(0.05, 0.6)
    out.depth_ok[frame] = True
    out.specular[lenses] = out.specular[lenses] + rng.uniform(0.15, 0.5)
    out.shininess[lenses] = 60.0
    edge = cv2.dilate(frame.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    out.normal[edge] = normals_from_z(out.z, res)[edge]
    return out


def attack_print(ident, rng, prof, res, dist, cut=False):
    cap = Capture.sample(rng, prof.max_yaw, prof.max_pitch, prof.crop_jitter)
    src = photo(ident, rng, res)
    vis, nir = printed(src, rng, prof.instrument("print", "carbon"), prof.instrument("print", "halftone"))
    glossy = rng.random() < 0.3
    bent = rng.random() < prof.instrument("print", "bent")[0]
    z = sheet_z(res, rng, dist + rng.uniform(-0.04, 0.03), bend=rng.uniform(*prof.instrument("print", "bend")) * bent)
    sheet = Layer(z=z, albedo_rgb=vis, albedo_nir=nir,
                  specular=np.full((res, res), 0.25 if glossy else 0.02, np.float32),
                  shininess=np.full((res, res), 40.0 if glossy else 6.0, np.float32),
                  emit_rgb=np.zeros((res, res, 3), np.float32), depth_ok=np.ones((res, res), bool),
                  normal=normals_from_z(z, res))
    rect = paper_rect(res, rng, cap)
    paper_colour = rng.uniform(0.8, 0.95)
    margin = (rect > 0) & (rng.random() < 0.5)
    if margin.any():  # a white border around the printed photo
        inner = cv2.erode(rect, np.ones((max(3, res // 16),) * 2, np.uint8))
        sheet.albedo_rgb = np.where((inner < 0.5)[..., None], paper_colour, sheet.albedo_rgb)
    behind_id = Identity.sample(rng)  # the attacker holding the sheet
    if cut or rng.random() < 0.5:
        person, reg = live(behind_id, rng, prof, res, dist + 0.02, cap)
    else:
        person, reg = background(res, rng, prof.background, prof.wall), None
    mask = rect
    if cut:
        holes = cv2.dilate((reg["eye"] > 0.2).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)
        if rng.random() < 0.5:
            holes = np.maximum(holes, (reg["lips"] > 0.3).astype(np.float32))
        if rng.random() < 0.3:
            x, y = grid(res)
            holes = np.maximum(holes, ((np.abs(x - cap.cx) < 0.06 * cap.scale) & (np.abs(y - cap.cy) < 0.2 * cap.scale)
                                       & (y > cap.cy - 0.05)).astype(np.float32))
        mask = rect * (1 - holes)
    return sheet.over(person, mask), {"glossy": glossy}


def attack_paper_mask(ident, rng, prof, res, dist) -> tuple[Layer, dict]:
    """A printed photo of the subject worn over an attacker's face (``mask_paper``): the paper follows the face,
    smoothed (it cannot follow the eye sockets or the sides of the nose), with cut-out eyes
    (``mask_paper.eye_holes`` of the time); printed with the domain's printer (``print.carbon``, ``halftone``)."""
    cap = Capture.sample(rng, prof.max_yaw, prof.max_pitch, prof.crop_jitter)
    src = photo(ident, rng, res)
    vis, nir = printed(src, rng, prof.instrument("print", "carbon"), prof.instrument("print", "halftone"))
    person, reg = live(Identity.sample(rng), rng, prof, res, dist, cap)
    cover = cv2.dilate((reg["face"] > 0.5).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)
    z = cv2.GaussianBlur(person.z, (0, 0), res / 20) - rng.uniform(0.002, 0.005)
    sheet = Layer(z=z.astype(np.float32), albedo_rgb=vis, albedo_nir=nir,
                  specular=np.full((res, res), 0.03, np.float32), shininess=np.full((res, res), 6.0, np.float32),
                  emit_rgb=np.zeros((res, res, 3), np.float32), depth_ok=np.ones((res, res), bool),
                  normal=normals_from_z(z, res))
    holes = bool(rng.random() < prof.instrument("mask_paper", "eye_holes")[0])
    if holes:
        cover = cover * (1 - cv2.dilate((reg["eye"] > 0.2).astype(np.uint8), np.ones((3, 3), np.uint8)))
    return sheet.over(person, cover), {"eye_holes": holes}


def attack_replay(ident, rng, prof, res, dist):
    cap = Capture.sample(rng, prof.max_yaw, prof.max_pitch, prof.crop_jitter)
    frame = photo(ident, rng, res)
    x, y = grid(res)
    brightness = rng.uniform(*prof.instrument("replay", "brightness"))
    tint = np.array([0.92, 1.0, 1.12], np.float32) * rng.normal(1, 0.03, 3).astype(np.float32)
    px = rng.uniform(0.35, 0.5) * res / 2
    cells = (0.5 + 0.5 * np.cos(2 * np.pi * px * x)) * (0.5 + 0.5 * np.cos(2 * np.pi * px * y))
    grid_pat = 1 - rng.uniform(*prof.instrument("replay", "grid")) * cells
    th = rng.uniform(0, np.pi)
    amp = rng.uniform(*prof.instrument("replay", "moire"))  # drawn first: the random stream stays that of v2 stores
    wave = 2 * np.pi * rng.uniform(2, 7) * (np.cos(th) * x + np.sin(th) * y) + rng.uniform(0, 6.3)
    moire = 1 + amp * np.sin(wave)
    emit = frame ** (1 / rng.uniform(0.9, 1.2)) * brightness * tint * (grid_pat * moire)[..., None]
    z = sheet_z(res, rng, dist + rng.uniform(-0.04, 0.03))
    screen = Layer(z=z, albedo_rgb=np.full((res, res, 3), 0.03, np.float32),
                   albedo_nir=np.full((res, res), 0.02, np.float32),
                   specular=np.full((res, res), 0.5, np.float32), shininess=np.full((res, res), 400.0, np.float32),
                   emit_rgb=emit.astype(np.float32), depth_ok=rng.random((res, res)) > 0.05,
                   normal=normals_from_z(z, res))
    if rng.random() < 0.5:  # structured light fails where the glass mirrors the projector
        n = screen.normal
        v = np.stack([0.1 * x, 0.1 * y, z], -1)
        ndv = (n * v).sum(-1) / np.linalg.norm(v, axis=-1)
        screen.depth_ok &= ndv < np.quantile(ndv, rng.uniform(0.85, 0.97))
    rect = paper_rect(res, rng, cap)
    bezel = (rect > 0.5) & (cv2.erode(rect, np.ones((max(3, res // 20),) * 2, np.uint8)) < 0.5)
    screen.emit_rgb[bezel] = 0.0
    screen.albedo_rgb[bezel] = 0.06
    screen.albedo_nir[bezel] = 0.1
    under = background(res, rng, prof.background, prof.wall)
    return screen.over(under, rect), {}


def attack_mask(ident, rng, prof, res, dist, rigid: bool):
    cap = Capture.sample(rng, prof.max_yaw * 0.8, prof.max_pitch * 0.8, prof.crop_jitter)
    wearer = Identity.sample(rng)
    person, preg = live(wearer, rng, prof, res, dist, cap)
    if rigid:
        custom = chance(rng, prof, "mask_rigid", "custom")
        mould = dataclasses.replace(ident) if custom else Identity.generic(rng)
        mould.hairline = -0.9
        flat_cap = Capture(**{**cap.__dict__, "smile": 0.2, "mouth_open": 0.0, "brow_raise": 0.3})
        mface, mreg = face_layer(mould, flat_cap, res, dist - 0.006, rng, fine=0.0, neck=False)
        paint = np.clip(ident.skin * rng.uniform(0.9, 1.15) + rng.normal(0, 0.04, 3), 0, 1).astype(np.float32)
        alb = np.broadcast_to(paint, (res, res, 3)).copy()
        for key, col in (("brows", ident.hair * 0.9), ("lips", ident.skin * np.array([0.8, 0.5, 0.5]))):
            alb = alb * (1 - mreg[key][..., None]) + mreg[key][..., None] * np.asarray(col, np.float32)
        mface.albedo_rgb = alb.astype(np.float32)
        resin = rng.uniform(*prof.instrument("mask_rigid", "nir_albedo"))
        # one resin, no features; paint with carbon black (nir_paint > 0) shows its painted features in NIR too
        dark = np.clip(1 - alb.mean(-1) / max(float(paint.mean()), 1e-3), 0, 1)
        mface.albedo_nir = (resin * (1 - rng.uniform(*prof.instrument("mask_rigid", "nir_paint")) * dark)
                            ).astype(np.float32)
        mface.specular = np.full((res, res), rng.uniform(0.3, 0.6), np.float32)
        mface.shininess = np.full((res, res), rng.uniform(25, 60), np.float32)
        cover = mreg["face"]
    else:
        ins = {k: rng.uniform(*prof.instrument("mask_flexible", k))
               for k in ("thickness", "perfusion", "nir_factor", "texture", "seam")}
        mface, mreg = face_layer(ident, cap, res, dist - ins["thickness"], rng, fine=0.6, neck=False)
        alb = mface.albedo_rgb
        flat = ident.skin * rng.uniform(0.95, 1.05)
        # pigmented silicone: little perfusion or mottling, less NIR than skin (no scattering through blood)
        mface.albedo_rgb = (ins["perfusion"] * alb + (1 - ins["perfusion"]) * flat).astype(np.float32)
        texture = 1 + rng.normal(0, ins["texture"], (res, res)).astype(np.float32)
        mface.albedo_nir = (mface.albedo_nir * ins["nir_factor"] * texture).astype(np.float32)
        mface.specular = mface.specular + rng.uniform(0.04, 0.1)
        cover = np.maximum(mreg["face"], mreg["hair"] * (rng.random() < 0.5))
        # the mask's edge: a seam of shadowed, thicker silicone where it meets the wearer's skin
        k = max(2, res // 40)
        inside = (cover > 0.5).astype(np.uint8)
        ring = (inside > 0) & (cv2.erode(inside, np.ones((k, k), np.uint8)) == 0)
        mface.albedo_rgb[ring] *= ins["seam"]
        mface.albedo_nir[ring] *= ins["seam"]
    eye_holes = prof.instrument("mask_rigid", "eye_holes")[0]
    holes = (preg["eye"] > 0.3) if (not rigid or rng.random() < eye_holes) else np.zeros((res, res), bool)
    holes = cv2.dilate(holes.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)
    return mface.over(person, cover * (1 - holes)), {"eye_holes": bool(holes.any())}


def attack_partial(ident, rng, prof, res, dist):
    cap = Capture.sample(rng, prof.max_yaw * 0.8, prof.max_pitch * 0.8, prof.crop_jitter)
    person, reg = live(ident, rng, prof, res, dist, cap)
    x, y = grid(res)
    lens = int(round(max(3, res // 14) * rng.uniform(*prof.instrument("partial", "lens_scale"))))
    eyes = cv2.dilate((reg["eye"] > 0.05).astype(np.uint8), np.ones((lens, lens), np.uint8))
    band = cv2.GaussianBlur(eyes.astype(np.float32), (0, 0), 1.0)
    z_front = float(np.percentile(person.z[eyes > 0], 10)) - rng.uniform(0.008, 0.02) if eyes.any() else dist
    z = np.full((res, res), z_front, np.float32) + 0.01 * rng.normal(0, 0.3) * (x - cap.cx)
    # printed eyes: the person's own eyes photographed and printed on the lenses
    src = (np.clip(shade_rgb(person, Lighting.sample(rng, ambient=(0.5, 0.7))), 0, 1)).astype(np.float32)
    vis, nir = printed(src, rng, prof.instrument("print", "carbon"), prof.instrument("print", "halftone"))
    rim = max(2, res // 40)
    frame = (band > 0.1) & (cv2.erode(eyes, np.ones((rim, rim), np.uint8)) == 0)
    vis[frame] = rng.uniform(0.0, 0.3, 3)
    nir[frame] = rng.uniform(*prof.instrument("partial", "frame_nir"))  # a dark plastic frame, in NIR too
    # the lenses mirror the emitter beside the lens: a glint real eyes behind no glasses do not show
    glint = rng.uniform(*prof.instrument("partial", "glint"))
    glasses = Layer(z=z, albedo_rgb=vis, albedo_nir=nir, specular=np.full((res, res), glint, np.float32),
                    shininess=np.full((res, res), 60.0, np.float32), emit_rgb=np.zeros((res, res, 3), np.float32),
                    depth_ok=np.ones((res, res), bool), normal=normals_from_z(z, res))
    return glasses.over(person, band), {}


def build_scene(pai: str, ident: Identity, rng: np.random.Generator, prof: DomainProfile, res: int,
                dist: float) -> tuple[Layer, dict]:
    """The scene in front of the cameras for one presentation of ``pai``."""
    if pai == "bonafide":
        scene, reg = live(ident, rng, prof, res, dist)
        if chance(rng, prof, "bonafide", "glasses"):
            return own_glasses(scene, reg, rng, res), {"glasses": True}
        return scene, {}
    if pai in ("print", "cut"):
        return attack_print(ident, rng, prof, res, dist, cut=pai == "cut")
    if pai == "replay":
        return attack_replay(ident, rng, prof, res, dist)
    if pai in ("mask_rigid", "mask_flexible"):
        return attack_mask(ident, rng, prof, res, dist, rigid=pai == "mask_rigid")
    if pai == "partial":
        return attack_partial(ident, rng, prof, res, dist)
    if pai == "mask_paper":
        return attack_paper_mask(ident, rng, prof, res, dist)
    raise ValueError(f"SimFAS cannot render PAI species {pai!r}")

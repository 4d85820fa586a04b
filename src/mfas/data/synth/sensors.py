"""Sensor models: what an RGB camera, an active-NIR camera and a depth camera record of a scene."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mfas.data.synth.scene import Layer, grid


@dataclass
class Lighting:
    direction: np.ndarray  # (3,) unit vector from the surface towards the light
    colour: np.ndarray  # (3,) visible light colour and intensity
    ambient: float
    ir_ambient: float  # sunlight / lamps in the NIR band, on top of the camera's own emitter

    @classmethod
    def sample(cls, rng: np.random.Generator, strength: float = 1.0, ambient: tuple = (0.25, 0.5),
               temperature: float = 0.0) -> Lighting:
        az, el = rng.uniform(-1.0, 1.0), rng.uniform(-0.6, 0.5)
        d = np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)], np.float32)
        warm = np.array([1 + temperature, 1.0, 1 - temperature], np.float32)
        return cls(direction=d / np.linalg.norm(d), colour=warm * strength * rng.uniform(0.8, 1.2),
                   ambient=float(rng.uniform(*ambient)), ir_ambient=float(rng.uniform(0.0, 0.15)))


def view_dirs(layer: Layer) -> np.ndarray:
    """Unit vectors from each surface point towards the camera, in the normals' frame."""
    x, y = grid(layer.z.shape[0])
    v = np.stack([0.1 * x, 0.1 * y, layer.z], axis=-1)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def shade_rgb(layer: Layer, light: Lighting) -> np.ndarray:
    """Lambert + Blinn-Phong under one light and ambient, plus emission. (H, W, 3) linear."""
    n = layer.normal
    ndl = np.clip(n @ light.direction, 0, None)
    half = light.direction + view_dirs(layer)
    half /= np.linalg.norm(half, axis=-1, keepdims=True)
    spec = layer.specular * np.clip((n * half).sum(-1), 0, None) ** layer.shininess
    diffuse = layer.albedo_rgb * (light.ambient + (1 - light.ambient) * ndl)[..., None]
    return diffuse * light.colour + spec[..., None] * light.colour + layer.emit_rgb


def shade_nir(layer: Layer, light: Lighting, z_ref: float) -> np.ndarray:
    """Active NIR: an emitter beside the lens, so shading follows n.view and falls off as 1/z^2."""
    ndv = np.clip((layer.normal * view_dirs(layer)).sum(-1), 0, None)
    falloff = (z_ref / np.maximum(layer.z, 0.05)) ** 2
    spec = layer.specular * ndv ** (layer.shininess * 2) * 1.5
    ambient = light.ir_ambient * (0.5 + 0.5 * np.clip(layer.normal @ light.direction, 0, None))
    return layer.albedo_nir * (0.15 + 0.85 * ndv) * falloff + spec * falloff + ambient * layer.albedo_nir


def sense_depth(layer: Layer, rng: np.random.Generator, near: float, far: float, mode: str,
                noise: float, holes: float, slope_cut: float, quant: int, window: float = 0.12,
                blur: float = 0.0) -> np.ndarray:
    """The depth camera: range, noise, holes on steep or unreturned surfaces, 8-bit encoding.

    ``mode="range"`` encodes [near, far] linearly (near = 255, far and beyond = 0, as in CeFA);
    ``mode="distance"`` encodes the same range the other way round (near = dark, as depth saved in millimetres
    looks), far and beyond = 0;
    ``mode="normalised"`` maps a window of +-``window`` metres around the median depth of the frame's
    centre to [0, 1] and drops what lies behind it (as preprocessed WMCA / CASIA-SURF depth looks).
    ``blur`` smooths the measured surface (sigma in pixels): a stereo matcher's window or a low-resolution
    time-of-flight sensor loses fine relief. Invalid pixels are 0.
    """
    z_true = cv2.GaussianBlur(layer.z, (0, 0), blur) if blur > 0 else layer.z
    z = z_true + rng.normal(0, noise, layer.z.shape).astype(np.float32) * (z_true / 0.6) ** 2
    ok = layer.depth_ok & (layer.normal[..., 2] > slope_cut) & (z < far)
    if holes:
        speckle = cv2.GaussianBlur(rng.random(z.shape).astype(np.float32), (0, 0), 2.5)
        ok &= speckle > np.quantile(speckle, holes)
    if mode == "range":
        d = (far - z) / (far - near)
    elif mode == "distance":
        d = (z - near) / (far - near)
    else:
        c = z.shape[0] // 3
        centre = z[c:-c, c:-c][ok[c:-c, c:-c]]
        mid = float(np.median(centre)) if centre.size else 0.5 * (near + far)
        d = 0.5 + (mid - z) / (2 * window)
        ok &= d >= 0
    d = np.clip(d, 0, 1)
    d = np.round(d * (quant - 1)) / (quant - 1)
    return np.where(ok, d, 0.0).astype(np.float32)


def camera(img: np.ndarray, out: int, rng: np.random.Generator, blur: float, noise: float,
           jpeg: tuple[int, int] | None, gamma: float = 1 / 2.2) -> np.ndarray:
    """Linear image in [0, ~1] -> uint8 at ``out`` x ``out``: optics blur, resample, noise, JPEG."""
    x = np.clip(img, 0, None).astype(np.float32)
    if blur > 0:
        x = cv2.GaussianBlur(x, (0, 0), blur)
    if x.shape[0] != out:
        x = cv2.resize(x, (out, out), interpolation=cv2.INTER_AREA if x.shape[0] > out else cv2.INTER_LINEAR)
    x = np.clip(x, 0, 1) ** gamma
    x = x + rng.normal(0, noise, x.shape).astype(np.float32)
    u8 = np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)
    if jpeg is not None:
        q = int(rng.integers(jpeg[0], jpeg[1] + 1))
        ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, q])
        u8 = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return u8

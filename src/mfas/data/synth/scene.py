"""Scene layers: per-pixel geometry and materials that the sensor models render.

Coordinates: image-plane ``x`` (right) and ``y`` (down) in [-1, 1] over the crop, which spans
about 0.2 m at the face, so one unit is ~0.1 m. ``z`` is the distance from the camera in metres.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


def grid(res: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y), each res x res, in [-1, 1]."""
    c = (np.arange(res, dtype=np.float32) + 0.5) / res * 2.0 - 1.0
    return np.meshgrid(c, c)


def normals_from_z(z: np.ndarray, res: int, units_per_m: float = 10.0) -> np.ndarray:
    """Unit surface normals (H, W, 3), camera looking along +z, normal pointing at the camera."""
    step = 2.0 / res / units_per_m  # metres per pixel
    gy, gx = np.gradient(z.astype(np.float32), step)
    n = np.stack([gx, gy, -np.ones_like(gx)], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    return -n  # towards the camera: positive z component


@dataclass
class Layer:
    """Everything the sensors need, per pixel (H, W[, 3])."""

    z: np.ndarray  # distance in metres
    albedo_rgb: np.ndarray  # (H, W, 3) diffuse reflectance in visible light
    albedo_nir: np.ndarray  # (H, W) diffuse reflectance under ~850 nm active illumination
    specular: np.ndarray  # (H, W) specular strength
    shininess: np.ndarray  # (H, W) Blinn-Phong exponent
    emit_rgb: np.ndarray  # (H, W, 3) emitted light (screens)
    depth_ok: np.ndarray  # (H, W) bool: the depth sensor can return a value here
    normal: np.ndarray | None = None  # (H, W, 3); computed from z when None

    @classmethod
    def background(cls, res: int, distance: float, rgb: np.ndarray, nir: float) -> Layer:
        shape = (res, res)
        return cls(z=np.full(shape, distance, np.float32),
                   albedo_rgb=np.broadcast_to(rgb, (*shape, 3)).astype(np.float32),
                   albedo_nir=np.full(shape, nir, np.float32),
                   specular=np.zeros(shape, np.float32), shininess=np.full(shape, 8.0, np.float32),
                   emit_rgb=np.zeros((*shape, 3), np.float32), depth_ok=np.ones(shape, bool),
                   normal=np.broadcast_to(np.array([0, 0, 1], np.float32), (*shape, 3)).copy())

    def with_normals(self, res: int) -> Layer:
        if self.normal is None:
            self.normal = normals_from_z(self.z, res)
        return self

    def over(self, under: Layer, mask: np.ndarray) -> Layer:
        """This layer where ``mask`` (H, W bool or [0, 1] float) is set, ``under`` elsewhere."""
        m = mask.astype(np.float32)
        out = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(under, f.name)
            if a is None or b is None:
                out[f.name] = None
                continue
            if a.dtype == bool:
                out[f.name] = np.where(m > 0.5, a, b)
                continue
            mm = m[..., None] if a.ndim == 3 else m
            out[f.name] = (a * mm + b * (1.0 - mm)).astype(np.float32)
        if out["normal"] is not None:
            n = out["normal"]
            out["normal"] = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)
        return Layer(**out)

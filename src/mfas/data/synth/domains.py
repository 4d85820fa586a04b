"""Domain profiles: four capture set-ups that differ like real datasets do.

Each profile fixes sensors (resolution, blur, noise, JPEG, white balance, depth encoding,
quantisation and holes, IR gain and automatic gain control), scene (distance, lighting,
background, pose range) and the mix of PAI species, loosely after the dataset whose letter it
borrows: ``C`` CeFA-like, ``P`` PADISI-like, ``S`` CASIA-SURF-like, ``W`` WMCA-like.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from mfas.errors import ConfigError


@dataclass(frozen=True)
class DomainProfile:
    name: str
    description: str
    pai_mix: dict[str, float]  # species -> weight, "bonafide" included
    native_res: int = 128  # resolution the sensors see before resampling to the store size
    blur: float = 0.6
    rgb_noise: float = 0.01
    ir_noise: float = 0.015
    jpeg: tuple[int, int] | None = (85, 95)
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    wb_jitter: float = 0.05
    exposure: tuple[float, float] = (0.8, 1.2)
    light_strength: float = 1.0
    ambient: tuple[float, float] = (0.25, 0.5)
    temperature: float = 0.0  # > 0 warm, < 0 cool
    distance: tuple[float, float] = (0.5, 0.8)  # metres from the cameras
    depth_mode: str = "range"  # "range" or "normalised"
    depth_near: float = 0.3
    depth_far: float = 1.2
    depth_noise: float = 0.002
    depth_holes: float = 0.02
    depth_slope: float = 0.2
    depth_quant: int = 256
    depth_window: float = 0.12  # half-width of the normalised depth window, metres
    ir_gain: tuple[float, float] = (0.8, 1.2)
    ir_agc: bool = True
    ir_gamma: float = 1 / 1.8
    background: str = "gradient"  # flat | gradient | texture | dark
    wall: tuple[float, float] = (1.6, 3.0)  # distance of the wall behind the subject, metres
    face_mask: bool = False  # keep only an ellipse around the detected face in every modality
    max_yaw: float = 20.0
    max_pitch: float = 12.0
    crop_jitter: float = 0.05
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, DomainProfile] = {
    "C": DomainProfile(
        name="C", description="CeFA-like: indoor, range-encoded depth, IR with AGC; print, replay, 3D masks",
        pai_mix={"bonafide": 0.3, "print": 0.2, "replay": 0.2, "mask_rigid": 0.15, "mask_flexible": 0.15},
        native_res=128, blur=0.7, rgb_noise=0.012, jpeg=(80, 92), white_balance=(1.0, 1.0, 1.05),
        distance=(0.45, 0.75), depth_mode="range", depth_near=0.3, depth_far=1.0, depth_noise=0.003,
        depth_holes=0.03, ir_agc=True, background="gradient", temperature=-0.05, wall=(0.8, 1.5)),
    "P": DomainProfile(
        name="P", description="PADISI-like: high quality, normalised depth, strong NIR emitter, many PAIs",
        pai_mix={"bonafide": 0.45, "print": 0.1, "replay": 0.1, "mask_rigid": 0.1, "mask_flexible": 0.12,
                 "partial": 0.13},
        native_res=160, blur=0.4, rgb_noise=0.006, ir_noise=0.008, jpeg=None, white_balance=(1.05, 1.0, 0.95),
        distance=(0.6, 0.9), depth_mode="normalised", depth_noise=0.0015, depth_holes=0.01,
        ir_gain=(1.0, 1.3), ir_agc=False, background="flat", max_yaw=12, temperature=0.05, ambient=(0.35, 0.6)),
    "S": DomainProfile(
        name="S", description="CASIA-SURF-like: low resolution, noisy quantised depth, heavy JPEG; prints and cut-outs",
        pai_mix={"bonafide": 0.3, "print": 0.4, "cut": 0.3},
        native_res=80, blur=1.0, rgb_noise=0.02, ir_noise=0.03, jpeg=(55, 75), white_balance=(0.95, 1.0, 1.1),
        distance=(0.5, 1.0), depth_mode="normalised", depth_noise=0.006, depth_holes=0.08, depth_quant=64,
        depth_slope=0.25, ir_agc=True, background="dark", crop_jitter=0.08, ambient=(0.2, 0.4),
        face_mask=True, extra={"note": "background removed with a fitted face mask, as CASIA-SURF did"}),
    "W": DomainProfile(
        name="W", description="WMCA-like: warm studio light, range depth with few holes, IR without AGC; "
                              "print, replay, rigid and flexible masks, glasses",
        pai_mix={"bonafide": 0.3, "print": 0.12, "replay": 0.14, "mask_rigid": 0.16, "mask_flexible": 0.14,
                 "partial": 0.14},
        native_res=128, blur=0.5, rgb_noise=0.01, jpeg=(88, 98), white_balance=(1.1, 1.0, 0.88),
        distance=(0.6, 1.0), depth_mode="range", depth_near=0.4, depth_far=1.4, depth_noise=0.002,
        depth_holes=0.015, ir_gain=(0.6, 1.4), ir_agc=False, background="texture", temperature=0.12, wall=(1.1, 2.2),
        light_strength=1.1),
}


def get_profile(name: str) -> DomainProfile:
    if name not in PROFILES:
        raise ConfigError(f"unknown SimFAS domain {name!r}; known: {', '.join(PROFILES)}")
    return PROFILES[name]

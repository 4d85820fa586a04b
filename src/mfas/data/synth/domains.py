"""Domain profiles: capture set-ups that differ like real datasets do, as data.

Each profile fixes sensors (resolution, blur, noise, JPEG, white balance, depth encoding,
quantisation and holes, IR gain and automatic gain control), scene (distance, lighting,
background, pose range), the mix of PAI species and the PAI instruments' materials
(``instruments``), loosely after the dataset whose letter it borrows: ``C`` CeFA-like, ``P``
PADISI-like, ``S`` CASIA-SURF-like, ``W`` WMCA-like. The built-in ones are YAML files in
``profiles/``; :func:`load_profiles` reads more (``mfas data synth --profiles my.yaml``), validated
like configs: an unknown key or species is an error naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from mfas.errors import ConfigError, did_you_mean

#: The materials of the presentation attack instruments, per species: (low, high) ranges a sample draws
#: from. A profile's ``instruments`` overrides any of them (the same species and key), so instruments can
#: differ between capture set-ups as they do between datasets. docs/simfas.md explains each cue.
INSTRUMENTS: dict[str, dict[str, tuple[float, float]]] = {
    # probability that a bona fide subject wears their own glasses (clear lenses: real eyes behind them, the
    # depth camera sees through the glass and returns the frame only)
    "bonafide": {"glasses": (0.0, 0.0)},
    # toner absorbs NIR (carbon black), dye inks hardly at all; depth of the halftone screen; probability that
    # the sheet is bent and how much (curvature round a vertical axis). Paper masks (mask_paper) are printed
    # with the same printer
    "print": {"carbon": (0.15, 0.6), "halftone": (0.06, 0.16), "bent": (0.4, 0.4), "bend": (0.1, 0.35)},
    # a printed face worn over the attacker's: probability of cut-out eyes
    "mask_paper": {"eye_holes": (0.5, 0.5)},
    # panel brightness; depth of the pixel-grid pattern (low-ppi monitors show it, phones hardly) and of the moire
    "replay": {"brightness": (0.6, 1.1), "grid": (0.05, 0.15), "moire": (0.04, 0.12)},
    # one resin of uniform NIR reflectance; probability of eye holes; how much of the painted features' darkness
    # NIR sees (0: dye paints, 1: carbon-black paint); probability that the mould was cast from the victim's own
    # face (a 3D scan: the victim's relief instead of an average face)
    "mask_rigid": {"nir_albedo": (0.4, 0.95), "eye_holes": (0.6, 0.6), "nir_paint": (0.0, 0.0),
                   "custom": (0.0, 0.0)},
    # silicone reflects less NIR than skin (no sub-surface scattering through blood); it keeps part of the
    # real albedo; its edge (thickness in metres) shows as a seam against the wearer's skin
    "mask_flexible": {"nir_factor": (0.55, 0.75), "texture": (0.05, 0.09), "perfusion": (0.3, 0.6),
                      "seam": (0.5, 0.75), "thickness": (0.004, 0.008)},
    # glasses with printed eyes: lens size relative to the eye region, frame NIR reflectance, glint strength
    "partial": {"lens_scale": (1.4, 1.9), "frame_nir": (0.05, 0.2), "glint": (0.3, 0.7)},
}


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
    depth_mode: str = "range"  # "range" (near bright), "distance" (near dark) or "normalised"
    depth_near: float = 0.3
    depth_far: float = 1.2
    depth_noise: float = 0.002
    depth_holes: float = 0.02
    depth_slope: float = 0.2
    depth_quant: int = 256
    depth_window: float = 0.12  # half-width of the normalised depth window, metres
    depth_blur: float = 0.0  # smoothing of the depth sensor (stereo matching window, low-res ToF), in native pixels
    ir_gain: tuple[float, float] = (0.8, 1.2)
    ir_agc: bool = True
    ir_gamma: float = 1 / 1.8
    # NIR reflectance of live tissue relative to 850 nm: lower at 940 nm, where water absorbs (the instruments'
    # materials do not change)
    nir_skin: float = 1.0
    background: str = "gradient"  # flat | gradient | texture | dark
    wall: tuple[float, float] = (1.6, 3.0)  # distance of the wall behind the subject, metres
    face_mask: bool = False  # keep only an ellipse around the detected face in every modality
    max_yaw: float = 20.0
    max_pitch: float = 12.0
    crop_jitter: float = 0.05
    extra: dict = field(default_factory=dict)
    instruments: dict = field(default_factory=dict)  # species -> {key: (low, high)}, over INSTRUMENTS
    # capture-session bias: scene fields that differ when attacks were recorded (another day, room or light), as
    # in real datasets; a shortcut inside the domain that does not transfer to others
    attack_session: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def for_species(self, species: str) -> DomainProfile:
        """The profile a presentation of ``species`` is rendered with: ``attack_session`` applied to attacks."""
        if species == "bonafide" or not self.attack_session:
            return self
        return dataclasses.replace(self, **self.attack_session)

    def instrument(self, species: str, key: str) -> tuple[float, float]:
        """The (low, high) range of an instrument property in this domain."""
        own = self.instruments.get(species, {})
        return tuple(own[key]) if key in own else INSTRUMENTS[species][key]  # type: ignore[return-value]


BUILTIN_DIR = Path(__file__).with_name("profiles")
SPECIES = ("bonafide", "print", "replay", "cut", "mask_rigid", "mask_flexible", "mask_paper", "partial")
_FIELDS = {f.name: f for f in dataclasses.fields(DomainProfile)}
_PAIRS = ("jpeg", "exposure", "ambient", "distance", "ir_gain", "wall")
#: the fields an attack session may change: the scene and its light, not the sensors
SESSION_FIELDS = ("distance", "ambient", "light_strength", "temperature", "exposure", "white_balance", "background",
                  "wall")


def profile_from_dict(name: str, data: object, where: str, base: Mapping[str, DomainProfile] | None = None
                      ) -> DomainProfile:
    """A validated :class:`DomainProfile` from a YAML mapping; ``base: X`` starts from profile ``X`` of ``base``.

    Errors are :class:`ConfigError` naming ``where``, the domain and the key."""
    at = f"{where}: domain {name!r}"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{at}: expected a mapping of profile fields, got {type(data).__name__}")
    data = dict(data)
    start: dict = {}
    if "base" in data:
        b = data.pop("base")
        known = dict(base or {})
        if b not in known:
            raise ConfigError(f"{at}: base {b!r} is not a known profile"
                              + did_you_mean(str(b), known, listing="known"))
        start = known[b].as_dict()
    for key in data:
        if key not in _FIELDS or key == "name":
            raise ConfigError(f"{at}: unknown key {key!r}"
                              + did_you_mean(str(key), [k for k in _FIELDS if k != "name"]))
    merged = {**start, **data, "name": name}
    if "instruments" in data and start:
        merged["instruments"] = {**start.get("instruments", {}), **data["instruments"]}
    for key in ("description", "pai_mix"):
        if key not in merged:
            raise ConfigError(f"{at}: {key!r} is required (or give a base profile)")
    _check_values(merged, at)
    fixed = {k: (tuple(v) if isinstance(v, list) else v) for k, v in merged.items()}
    fixed["instruments"] = {sp: {k: tuple(v) for k, v in d.items()} for sp, d in merged.get("instruments", {}).items()}
    fixed["attack_session"] = {k: (tuple(v) if isinstance(v, list) else v)
                               for k, v in merged.get("attack_session", {}).items()}
    return DomainProfile(**fixed)


def _check_values(d: dict, at: str) -> None:
    def number(key: str, v: object, lo: float | None = None) -> None:
        if isinstance(v, bool) or not isinstance(v, int | float) or (lo is not None and v < lo):
            raise ConfigError(f"{at}: {key} must be a number{f' >= {lo}' if lo is not None else ''}, got {v!r}")

    mix = d["pai_mix"]
    if not isinstance(mix, Mapping) or not mix:
        raise ConfigError(f"{at}: pai_mix must map species to weights, got {mix!r}")
    for sp, w in mix.items():
        if sp not in SPECIES:
            raise ConfigError(f"{at}: pai_mix: unknown species {sp!r}" + did_you_mean(str(sp), SPECIES))
        number(f"pai_mix.{sp}", w, 0)
    if sum(mix.values()) <= 0 or mix.get("bonafide", 0) <= 0 or len(mix) < 2:
        raise ConfigError(f"{at}: pai_mix needs bona fide and at least one attack species with weight > 0")
    session = d.get("attack_session", {})
    if not isinstance(session, Mapping):
        raise ConfigError(f"{at}: attack_session must map scene fields to values, got {session!r}")
    for key in session:
        if key not in SESSION_FIELDS:
            raise ConfigError(f"{at}: attack_session: {key!r} is not a scene field an attack session may change"
                              + did_you_mean(str(key), SESSION_FIELDS, listing="those are"))
    if session:
        _check_values({**{k: v for k, v in d.items() if k != "attack_session"}, **session}, f"{at}: attack_session")
    for key, f in _FIELDS.items():
        if key in ("name", "pai_mix", "instruments", "extra", "description", "attack_session") or key not in d:
            continue
        v = d[key]
        if key == "jpeg" and v is None:
            continue
        if key in _PAIRS or key == "white_balance":
            n = 3 if key == "white_balance" else 2
            if not isinstance(v, list | tuple) or len(v) != n:
                raise ConfigError(f"{at}: {key} must be a list of {n} numbers, got {v!r}")
            for x in v:
                number(key, x, 0)
            if n == 2 and v[0] > v[1]:
                raise ConfigError(f"{at}: {key} must be [low, high] with low <= high, got {list(v)}")
        elif f.type in ("bool",):
            if not isinstance(v, bool):
                raise ConfigError(f"{at}: {key} must be true or false, got {v!r}")
        elif key in ("depth_mode", "background"):
            allowed = (("range", "distance", "normalised") if key == "depth_mode"
                       else ("flat", "gradient", "texture", "dark"))
            if v not in allowed:
                raise ConfigError(f"{at}: {key} must be one of {', '.join(allowed)}, got {v!r}")
        else:
            number(key, v, 0 if key not in ("temperature",) else None)
    if not isinstance(d.get("description"), str):
        raise ConfigError(f"{at}: description must be text")
    if int(d.get("native_res", 128)) < 16:
        raise ConfigError(f"{at}: native_res must be at least 16")
    ins = d.get("instruments", {})
    if not isinstance(ins, Mapping):
        raise ConfigError(f"{at}: instruments must map species to properties, got {ins!r}")
    for sp, props in ins.items():
        if sp not in INSTRUMENTS:
            raise ConfigError(f"{at}: instruments: unknown species {sp!r}" + did_you_mean(str(sp), INSTRUMENTS))
        if not isinstance(props, Mapping):
            raise ConfigError(f"{at}: instruments.{sp} must map properties to [low, high]")
        for k, v in props.items():
            if k not in INSTRUMENTS[sp]:
                raise ConfigError(f"{at}: instruments.{sp}: unknown property {k!r}"
                                  + did_you_mean(str(k), INSTRUMENTS[sp]))
            pair = isinstance(v, list | tuple) and len(v) == 2
            if not pair or any(isinstance(x, bool) or not isinstance(x, int | float) for x in v) or v[0] > v[1]:
                raise ConfigError(f"{at}: instruments.{sp}.{k} must be [low, high] numbers with low <= high, got {v!r}")


def load_profiles(path: str | Path, base: Mapping[str, DomainProfile] | None = None) -> dict[str, DomainProfile]:
    """Domain profiles from a YAML file: a mapping ``{domain name: {profile fields}}``. A profile may start from
    another with ``base: NAME`` (a built-in, or one defined earlier in the file)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the profiles file ({e.strerror or e})") from None
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{p}: not a YAML file ({str(e).splitlines()[0]})") from None
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"{p}: expected a mapping of domain names to profiles")
    known = dict(PROFILES if base is None else base)
    out: dict[str, DomainProfile] = {}
    for name, fields in data.items():
        if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"{p}: domain name {name!r} must be letters, digits, '-' or '_'")
        out[name] = profile_from_dict(name, fields, str(p), {**known, **out})
    return out


def _builtin() -> dict[str, DomainProfile]:
    out: dict[str, DomainProfile] = {}
    for f in sorted(BUILTIN_DIR.glob("*.yaml")):
        out.update(load_profiles(f, base=out))
    return out


PROFILES: dict[str, DomainProfile] = {}
PROFILES.update(_builtin())


def get_profile(name: str, profiles: Mapping[str, DomainProfile] | None = None) -> DomainProfile:
    """Profile ``name`` from ``profiles`` (a file's), else the built-in ones."""
    known = {**PROFILES, **(profiles or {})}
    if name not in known:
        raise ConfigError(f"unknown SimFAS domain {name!r}; known: {', '.join(known)}")
    return known[name]

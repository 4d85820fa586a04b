"""Checkpoints of the released MMDA code (github.com/murInJ/MMDA) as weights of mfas' ``mmda``.

The released ``train.py`` saves ``accelerator.unwrap_model(model).state_dict()`` of its ``MMDA`` module, whose
layout (read from ``models/framework/MMDA.py`` and the vendored ``models/layer/MoE/stMoE/st_moe.py``) is:

=============================================================  ==============================================
released key                                                    ``mmda`` key
=============================================================  ==============================================
``model.<k>`` (OpenAI CLIP)                                     ``clip.<k>`` (open_clip uses the same names)
``adapter.fusion.attn.w_qs|w_ks|w_vs|w_dqs|w_dks.weight``       ``md2a.attn.q|k|v|dq|dk.weight``
``adapter.fusion.attn.lambda_q1|k1|q2|k2``                      ``md2a.attn.lambda_*``
``adapter.fusion.attn.ln.weight`` (RMSNorm)                     ``md2a.attn.norm.weight``
``adapter.fusion.ln1|ln2|proj.*``                               ``md2a.ln1|ln2|proj.*``
``adapter.u_align.refine.N.attn|ln1|ln2.*``                     ``udsa.refine.N.attn|ln1|ln2.*``
``adapter.u_align.remapping.N.*``                               ``udsa.remap.N.*``
``adapter.classifier.proj.*``                                   ``classifier.head.*``
MoE ``adapter.fusion.net``, ``adapter.u_align.refine.N.to_feature``, ``adapter.u_align.remapping.N.to_feature``,
``adapter.classifier.net`` -> ``md2a.moe``, ``udsa.refine.N.moe``, ``udsa.remap.N.moe``, ``classifier.moe``:
``<moe>.gate.to_gates.weight`` (E, D)                          ``<moe>.router.weight``
``<moe>.experts.experts.e.net.0.weight`` (D) for e < 4          ``<moe>.norm_weight[e]``
``<moe>.experts.experts.e.net.1.weight|bias`` (2H, D), (2H)     ``<moe>.w1[e]`` (transposed), ``<moe>.b1[e]``
``<moe>.experts.experts.e.net.2.mult_bias`` (H)                 ``<moe>.mult_bias[e]``
``<moe>.experts.experts.e.net.3.weight|bias`` (D, H), (D)       ``<moe>.w2[e]`` (transposed), ``<moe>.b2[e]``
``<moe>.experts.experts.e.const`` (D) for e >= 4                ``<moe>.const[e - 4]``
=============================================================  ==============================================

Keys without a counterpart are listed in the result, never dropped silently: the gates' ``threshold_train`` and
``threshold_eval`` buffers ([1e-9, 0.2], checked against the model's threshold) and, in checkpoints of versions
before July 2025, the unused head ``classifier.0..3`` of the ``MMDA`` module. Any other key, and any missing
or misshapen one, is a :class:`~mfas.errors.ConfigError` that names it. An RMSNorm's parameter may be spelt
``gamma`` (the L2-form class of the released repository) or ``weight``; both are read. Wrapper prefixes
(``module.`` from DDP, ``_orig_mod.`` from torch.compile) and a ``state_dict`` / ``model`` / ``module`` wrapper
around the whole dict are removed first. mfas' own buffers (the clean mode's reference token) start empty.
"""

from __future__ import annotations

import hashlib
import inspect
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from mfas.errors import ConfigError
from mfas.models.mmda.moe import MoE

#: (released module path, mmda module path, what follows it: a regex for the parameter names, or MOE);
#: "#" stands for a U-DSA level index
MOE = "moe"
_BLOCK = r"attn\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)|ln[12]\.(weight|bias)"
_MODULES: tuple[tuple[str, str, str], ...] = (
    ("model", "clip", r".+"),
    ("adapter.fusion.attn.w_qs", "md2a.attn.q", r"weight"),
    ("adapter.fusion.attn.w_ks", "md2a.attn.k", r"weight"),
    ("adapter.fusion.attn.w_vs", "md2a.attn.v", r"weight"),
    ("adapter.fusion.attn.w_dqs", "md2a.attn.dq", r"weight"),
    ("adapter.fusion.attn.w_dks", "md2a.attn.dk", r"weight"),
    ("adapter.fusion.attn.ln", "md2a.attn.norm", r"weight"),
    ("adapter.fusion.attn", "md2a.attn", r"lambda_[qk][12]"),
    ("adapter.fusion.net", "md2a.moe", MOE),
    ("adapter.fusion", "md2a", r"(ln1|ln2|proj)\.(weight|bias)"),
    ("adapter.u_align.refine.#.to_feature", "udsa.refine.#.moe", MOE),
    ("adapter.u_align.refine.#", "udsa.refine.#", _BLOCK),
    ("adapter.u_align.remapping.#.to_feature", "udsa.remap.#.moe", MOE),
    ("adapter.u_align.remapping.#", "udsa.remap.#", _BLOCK),
    ("adapter.classifier.net", "classifier.moe", MOE),
    ("adapter.classifier.proj", "classifier.head", r"weight|bias"),
)
#: an FFN expert's pieces: released name under ``experts.experts.e.`` -> (stacked mmda parameter, transposed)
_FFN = {"net.0.weight": ("norm_weight", False), "net.1.weight": ("w1", True), "net.1.bias": ("b1", False),
        "net.2.mult_bias": ("mult_bias", False), "net.3.weight": ("w2", True), "net.3.bias": ("b2", False)}
_EXPERT = re.compile(r"experts\.experts\.(\d+)\.(.+)")
#: the unused head of the released MMDA module (removed in July 2025): RMSNorm, Linear, GEGLU, Linear
_OLD_HEAD = re.compile(r"classifier\.(0\.weight|1\.weight|1\.bias|2\.mult_bias|3\.weight|3\.bias)")
_GAMMA = re.compile(r"(adapter\.fusion\.attn\.ln|.+\.experts\.experts\.\d+\.net\.0|classifier\.0)\.gamma")
_WRAPPERS = ("module.", "_orig_mod.")
#: mmda's own persistent buffers, which released checkpoints do not have
_OWN_BUFFERS = ("reference", "reference_seen")


def _pattern(path: str) -> str:
    return r"(\d+)".join(re.escape(part) for part in path.split("#"))


# longest module paths first, so ``adapter.fusion.attn.ln`` wins over ``adapter.fusion.attn``
_FORWARD = [(re.compile(_pattern(r) + r"\.(.+)"), o, leaf)
            for r, o, leaf in sorted(_MODULES, key=lambda m: -len(m[0]))]
_BACKWARD = [(re.compile(_pattern(o) + r"\.(.+)"), r, leaf)
             for r, o, leaf in sorted(_MODULES, key=lambda m: -len(m[1]))]


def _fill(path: str, index: str | None) -> str:
    return path.replace("#", index) if index is not None else path


def _split(key: str, table: list) -> tuple[str, str, str, str] | None:
    """(source module, target module, parameter name, leaf rule) of the first table entry ``key`` falls under."""
    for rx, target, leaf in table:
        m = rx.fullmatch(key)
        if m:
            index = m.group(1) if m.re.groups == 2 else None
            return key[: len(key) - len(m.group(m.re.groups)) - 1], _fill(target, index), m.group(m.re.groups), leaf
    return None


def released_prefix(mmda_module: str) -> str:
    """The released module path of an mmda module path, e.g. ``udsa.remap.3.moe`` ->
    ``adapter.u_align.remapping.3.to_feature``."""
    hit = _split(f"{mmda_module}.x", _BACKWARD)
    if hit is None or hit[0] != mmda_module:
        raise ConfigError(f"{mmda_module!r} has no counterpart in the released MMDA layout")
    return hit[1]


def released_layout(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Every key a released-code checkpoint of a model shaped like ``model`` holds, with its shape (the gates'
    threshold buffers, which are optional here, left out)."""
    layout: dict[str, tuple[int, ...]] = {}
    moes = {name: mod for name, mod in model.named_modules() if isinstance(mod, MoE)}
    for name, moe in moes.items():
        rp = released_prefix(name)
        dim, hidden = moe.router.weight.shape[1], moe.mult_bias.shape[1]
        layout[f"{rp}.gate.to_gates.weight"] = (moe.n_experts, dim)
        shapes = {"net.0.weight": (dim,), "net.1.weight": (2 * hidden, dim), "net.1.bias": (2 * hidden,),
                  "net.2.mult_bias": (hidden,), "net.3.weight": (dim, hidden), "net.3.bias": (dim,)}
        for e in range(moe.n_ffn):
            layout.update({f"{rp}.experts.experts.{e}.{piece}": s for piece, s in shapes.items()})
        for e in range(moe.n_ffn, moe.n_experts):
            layout[f"{rp}.experts.experts.{e}.const"] = (dim,)
    for key, t in model.state_dict().items():
        if key in _OWN_BUFFERS or any(key.startswith(f"{m}.") for m in moes):
            continue
        hit = _split(key, _BACKWARD)
        if hit is None or hit[3] == MOE or not re.fullmatch(hit[3], hit[2]):
            raise ConfigError(f"{key!r} has no counterpart in the released MMDA layout")
        layout[f"{hit[1]}.{hit[2]}"] = tuple(t.shape)
    return layout


def _clean(sd: Mapping, where: str) -> dict[str, torch.Tensor]:
    """The flat state dict: wrapper dicts and prefixes removed, ``gamma`` read as ``weight``."""
    obj: object = sd
    while isinstance(obj, Mapping) and not any(torch.is_tensor(v) for v in obj.values()):
        inner = [obj[k] for k in ("state_dict", "model", "module") if isinstance(obj.get(k), Mapping)]
        if not inner:
            break
        obj = inner[0]
    if not isinstance(obj, Mapping) or not obj:
        raise ConfigError(f"{where}: not a state dict (a mapping of names to tensors)")
    bad = sorted(str(k) for k, v in obj.items() if not torch.is_tensor(v))
    if bad:
        raise ConfigError(f"{where}: entries that are not tensors: {', '.join(bad[:8])}")
    out: dict[str, torch.Tensor] = {}
    for key, v in obj.items():
        name = str(key)
        while name.startswith(_WRAPPERS):
            name = name.split(".", 1)[1]
        m = _GAMMA.fullmatch(name)
        if m:
            name = f"{m.group(1)}.weight"
        if name in out:
            raise ConfigError(f"{where}: {key!r} and another key both give {name!r}")
        out[name] = v
    return out


def _listing(label: str, keys: list[str]) -> str:
    more = f", ... and {len(keys) - 8} more" if len(keys) > 8 else ""
    return f"{len(keys)} {label} ({', '.join(keys[:8])}{more})"


def _check(where: str, unknown: list[str], missing: list[str], wrong: list[str]) -> None:
    parts = [_listing(label, sorted(keys)) for label, keys in
             (("unknown", unknown), ("missing", missing), ("of the wrong shape", wrong)) if keys]
    if parts:
        raise ConfigError(f"{where}: not a checkpoint of the released MMDA code for this model: {'; '.join(parts)}")


@dataclass
class Conversion:
    """``state_dict`` in mmda's names; ``ignored``: released keys without a counterpart, with the reason."""

    state_dict: dict[str, torch.Tensor]
    ignored: dict[str, str] = field(default_factory=dict)


_DEFAULT_THRESHOLD = float(inspect.signature(MoE).parameters["threshold"].default)


def _ignorable(key: str, v: torch.Tensor, model: nn.Module | None, where: str) -> str | None:
    if _OLD_HEAD.fullmatch(key):
        return "the released MMDA module's unused head (removed from the released code in July 2025)"
    m = re.fullmatch(r"(.+)\.gate\.(threshold_train|threshold_eval)", key)
    if m:
        hit = _split(f"{m.group(1)}.x", _FORWARD)
        if hit is None or hit[3] != MOE or hit[0] != m.group(1):
            return None
        threshold = _DEFAULT_THRESHOLD
        if model is not None:
            try:
                threshold = float(model.get_submodule(hit[1]).threshold)
            except AttributeError:
                return None
        values = ", ".join(f"{x:.3g}" for x in v.flatten().tolist())
        if v.shape != (2,) or abs(float(v[1]) - threshold) > 1e-6:
            raise ConfigError(f"{where}: {key} = [{values}] does not fit top-2 routing with the model's second-"
                              f"expert threshold {threshold:g}")
        return f"a constant of the released gate ([{values}]), the same as the model's MoE threshold {threshold:g}"
    return None


def convert_released(sd: Mapping, model: nn.Module | None = None, where: str = "checkpoint") -> Conversion:
    """A released-code state dict in mmda's names. With ``model``, every key is checked against the layout of
    that model (unknown, missing and misshapen keys are named in one ConfigError); without, the names and the
    completeness of every MoE are checked."""
    flat = _clean(sd, where)
    ignored: dict[str, str] = {}
    rest: dict[str, torch.Tensor] = {}
    for k, v in flat.items():
        reason = _ignorable(k, v, model, where)
        if reason is None:
            rest[k] = v
        else:
            ignored[k] = reason
    if model is not None:
        expected = released_layout(model)
        wrong = [f"{k} {tuple(rest[k].shape)}, expected {expected[k]}" for k in sorted(set(rest) & set(expected))
                 if tuple(rest[k].shape) != expected[k]]
        _check(where, sorted(set(rest) - set(expected)), sorted(set(expected) - set(rest)), wrong)
    out: dict[str, torch.Tensor] = {}
    moes: dict[str, tuple[str, dict[str, torch.Tensor]]] = {}
    unknown: list[str] = []
    for k, v in rest.items():
        hit = _split(k, _FORWARD)
        if hit is None:
            unknown.append(k)
        elif hit[3] == MOE:
            moes.setdefault(hit[1], (hit[0], {}))[1][hit[2]] = v
        elif re.fullmatch(hit[3], hit[2]):
            out[f"{hit[1]}.{hit[2]}"] = v
        else:
            unknown.append(k)
    missing: list[str] = []
    for target, (source, parts) in moes.items():
        stacked, bad, lost = _stack_moe(source, parts)
        unknown += bad
        missing += lost
        out.update({f"{target}.{n}": t for n, t in stacked.items()})
    _check(where, unknown, missing, [])
    if "md2a.proj.weight" in out:
        dim = out["md2a.proj.weight"].shape[0]
        out["reference"] = torch.zeros(out["md2a.proj.weight"].shape[1] // dim, dim)
        out["reference_seen"] = torch.zeros((), dtype=torch.long)
    return Conversion(out, ignored)


def _stack_moe(source: str, parts: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """(mmda parameters of one MoE, unknown released keys, missing released keys) from its released keys."""
    unknown: list[str] = []
    ffn: dict[int, dict[str, torch.Tensor]] = {}
    const: dict[int, torch.Tensor] = {}
    router = parts.get("gate.to_gates.weight")
    for leaf, v in parts.items():
        m = _EXPERT.fullmatch(leaf)
        if leaf == "gate.to_gates.weight":
            continue
        if m and m.group(2) in _FFN:
            ffn.setdefault(int(m.group(1)), {})[m.group(2)] = v
        elif m and m.group(2) == "const":
            const[int(m.group(1))] = v
        else:
            unknown.append(f"{source}.{leaf}")
    n = router.shape[0] if router is not None else 1 + max([*ffn, *const], default=-1)
    first_const = min(const, default=n)
    missing = [] if router is not None else [f"{source}.gate.to_gates.weight"]
    for e in range(n):
        if e < first_const:
            missing += [f"{source}.experts.experts.{e}.{p}" for p in _FFN if p not in ffn.get(e, {})]
        else:
            if e not in const:
                missing.append(f"{source}.experts.experts.{e}.const")
            unknown += [f"{source}.experts.experts.{e}.{p}" for p in ffn.get(e, {})]
    unknown += [f"{source}.experts.experts.{e}.{p}" for e in ffn if e >= n for p in ffn[e]]
    unknown += [f"{source}.experts.experts.{e}.const" for e in const if e >= n]
    if missing or unknown:
        return {}, unknown, missing
    out = {name: torch.stack([ffn[e][piece].T if transposed else ffn[e][piece] for e in range(first_const)])
           for piece, (name, transposed) in _FFN.items()}
    out["const"] = torch.stack([const[e] for e in range(first_const, n)])
    out["router.weight"] = router
    return out, [], []


def convert_released_state_dict(sd: Mapping, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The state dict of a released-code checkpoint in mmda's names (see :func:`convert_released`)."""
    return convert_released(sd, model).state_dict


def read_checkpoint(path: str | Path) -> dict:
    """The tensors of a ``.pt``/``.pth``/``.bin`` (``torch.load(weights_only=True)``: no code is unpickled) or
    ``.safetensors`` file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such file")
    from safetensors import SafetensorError

    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # not torch's advice to retry unsafely: nothing of the file was run
        raise ConfigError(f"{p}: cannot be read as a checkpoint: the safe loader (weights_only) refused it, so it "
                          "holds more than tensors or is not a checkpoint at all; nothing in it was run") from None
    except (RuntimeError, OSError, ValueError, EOFError, KeyError, SafetensorError) as e:
        reason = str(e).splitlines()[0] if str(e) else repr(e)
        raise ConfigError(f"{p}: cannot be read as a checkpoint ({reason})") from None


def load_released_checkpoint(path: str | Path, model: nn.Module) -> dict:
    """Load a checkpoint of the released MMDA code into ``model`` (an ``mmda`` or ``mmda-tiny`` of the same
    sizes) with every key accounted for. Returns a record for the bundle: source, SHA-256, ignored keys."""
    from mfas.models.mmda.model import MMDA

    if not isinstance(model, MMDA):
        raise ConfigError(f"released MMDA checkpoints load into an MMDA model, not {type(model).__name__}")
    p = Path(path)
    conv = convert_released(read_checkpoint(p), model, where=str(p))
    model.load_state_dict(conv.state_dict, strict=True)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return {"source": str(p), "sha256": h.hexdigest(), "layout": "murInJ/MMDA state dict", "ignored": conv.ignored}


def converted_run_config(name: str, protocol: str | None, model: str = "mmda") -> dict:
    """The experiment config written next to a converted bundle (``mfas evaluate`` reads it): the released
    recipe that produced the weights (``compat: official``, micro-batches and test batches of 3, AdamW lr 5e-6
    with weight decay 5e-5, constant lr, 300 epochs, fp32)."""
    cfg: dict = {"name": name, "seed": 42}
    if protocol:
        cfg["protocol"] = protocol
    cfg.update({"data": {"batch_size": 3, "eval_batch_size": 3, "sampler": "random"},
                "model": {"name": model, "compat": "official"},
                "optim": {"lr": 5.0e-6, "weight_decay": 5.0e-5, "schedule": "constant", "warmup": 0.0},
                "trainer": {"max_epochs": 300, "accumulate_grad_batches": 24, "precision": "32-true"},
                "eval": {"policies": ["test_eer", "val_eer", "bpcer:0.01"], "selection": "last"}})
    return cfg

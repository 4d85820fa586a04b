"""Experiment configuration: one YAML file, validated into typed objects, overridable by key.

Every value is checked before anything runs: sizes and counts must be positive, rates finite, the run name a plain
folder name, threshold policies parseable, model options known to the model's builder and of its types. An error
names the file, the key and what was expected.
"""

from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mfas.errors import ConfigError, config_error_from_pydantic
from mfas.metrics.thresholds import ThresholdPolicy

Positive = Annotated[int, Field(gt=0)]
NonNegative = Annotated[int, Field(ge=0)]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]

#: at most this many bytes in a run name (a folder name on every common file system)
MAX_NAME_BYTES = 255


def run_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a run folder, or None. A run name is a plain folder name: not empty, no path
    separator, not ``.`` or ``..``, no control character, no space at either end, at most 255 bytes."""
    if not name or not name.strip():
        return "a run name must not be empty"
    if name in (".", ".."):
        return f"a run name must be a plain folder name, not {name!r}"
    seps = {"/", "\\", os.sep, os.altsep} - {None}
    if any(s in name for s in seps):
        return "a run name must be a plain folder name, without '/' or '\\' (the folder is output_dir/name)"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "a run name must not contain control characters"
    if name != name.strip():
        return "a run name must not begin or end with a space"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"a run name has at most {MAX_NAME_BYTES} bytes"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DataConfig(_Strict):
    stores: dict[str, str] = {}  # store key -> folder; merged over datasets.yaml
    datasets_file: str | None = None
    image_size: Positive | None = None  # default: the model's input size
    batch_size: Positive = 32
    eval_batch_size: Positive = 64
    sampler: Literal["random", "class_balanced", "class_domain", "domain_groups"] = "class_balanced"
    batches_per_epoch: Positive | None = None  # default: ceil(train samples / batch size)
    workers: NonNegative = 0
    augment: bool = True
    # diagnostic (the known-answer suite): permute the training labels, which destroys every cue; a model must
    # then score at chance. Validation and test keep their labels.
    shuffle_labels: bool = False


class ModelConfig(BaseModel):
    """``name`` plus any keyword the model's builder accepts (checked against the builder's signature when the
    config is validated, and by the builder when the model is built)."""

    model_config = ConfigDict(extra="allow")
    name: str

    @property
    def overrides(self) -> dict:
        return dict(self.model_extra or {})


class OptimConfig(_Strict):
    # adamw: decoupled weight decay; adam: L2 added to the gradient (torch.optim.Adam), as the FLIP, ViTAF, CMFL,
    # MM-CDCN and MMDG/DADM codes train
    name: Literal["adamw", "adam"] = "adamw"
    lr: Annotated[float, Field(gt=0.0)] = 1e-4
    weight_decay: Annotated[float, Field(ge=0.0)] = 1e-2
    betas: tuple[Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]] = (0.9, 0.999)
    schedule: Literal["cosine", "constant", "step"] = "cosine"
    warmup: Rate = 0.1  # fraction of all optimiser steps with linear warm-up
    min_lr_ratio: Rate = 0.0  # cosine floor as a fraction of lr
    # schedule "step": lr times step_gamma after every step_epochs epochs (StepLR, as MM-CDCN's code: 20, 0.5)
    step_epochs: Annotated[int, Field(ge=1)] = 20
    step_gamma: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5


def _lightning_names(kind: str) -> list[str]:
    """The precision, accelerator or strategy names this Lightning accepts."""
    if kind == "precision":
        from typing import get_args

        from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT

        def flat(t: object) -> list[str]:
            args = get_args(t)
            return [x for a in args for x in flat(a)] if args else [str(t)]

        return sorted({str(a) for a in flat(_PRECISION_INPUT)})
    if kind == "accelerator":
        from lightning.pytorch.accelerators import AcceleratorRegistry

        return ["auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())]
    from lightning.pytorch.strategies import StrategyRegistry

    return ["auto", *StrategyRegistry.available_strategies()]


def _one_of(value: str, kind: str) -> str:
    names = _lightning_names(kind)
    if value not in names:
        from mfas.errors import did_you_mean

        raise ValueError(f"unknown {kind} {value!r}" + did_you_mean(value, names, listing="valid"))
    return value


class TrainerConfig(_Strict):
    max_epochs: Positive = 10
    max_steps: int = -1  # > 0 stops earlier than max_epochs; -1: no limit
    precision: str = "32-true"  # "bf16-mixed" on GPU
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: Positive = 1
    strategy: str = "auto"  # "ddp" for several devices
    accumulate_grad_batches: Positive = 1
    gradient_clip_val: Annotated[float, Field(ge=0.0)] | None = None  # 0 or None: no clipping
    deterministic: bool = False
    log_every_n_steps: Positive = 10
    progress: bool = True
    # "keep": freed host memory stays with the process (mfas.engine.allocator), "system": glibc's own thresholds
    cpu_allocator: Literal["keep", "system"] = "keep"

    @field_validator("max_steps")
    @classmethod
    def _max_steps(cls, v: int) -> int:
        if v != -1 and v < 1:
            raise ValueError("max_steps is -1 (no limit: max_epochs decides) or a positive number of optimiser steps")
        return v

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, v: object) -> object:
        return _one_of(str(v), "precision") if isinstance(v, str | int) and not isinstance(v, bool) else v

    @field_validator("accelerator")
    @classmethod
    def _accelerator(cls, v: str) -> str:
        return _one_of(v, "accelerator")

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        return _one_of(v, "strategy")

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: int | str) -> int | str:
        if isinstance(v, int) and (v >= 1 or v == -1):
            return v
        if isinstance(v, str) and re.fullmatch(r"auto|-1|\d+|\d+(,\d+)*,?|\[\d+(,\s*\d+)*\]", v.strip()):
            return v
        raise ValueError("devices is a count (1, 2, ...; -1 for all), 'auto', or device indices such as '0,1'")


class EvalConfig(_Strict):
    policies: list[str] = ["test_eer", "val_eer"]
    selection: Literal["last", "best_source_val", "oracle_target"] = "last"
    every_n_epochs: Positive = 1
    bundle_policy: str = "val_eer"  # the threshold stored in the inference bundle

    @field_validator("policies")
    @classmethod
    def _policies(cls, v: list[str]) -> list[str]:
        return [str(ThresholdPolicy.parse(p)) for p in v]

    @field_validator("bundle_policy")
    @classmethod
    def _bundle_policy(cls, v: str) -> str:
        p = ThresholdPolicy.parse(v)
        if p.paper_compatible:
            raise ValueError(f"{v} chooses the threshold on test labels; a deployed threshold must not: use val_eer, "
                             "bpcer:<rate>, apcer:<rate> or fixed:<t>")
        return str(p)


class ExperimentConfig(_Strict):
    name: str
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    protocol: Annotated[str, Field(min_length=1)]
    protocol_file: str | None = None
    output_dir: str = "runs"
    data: DataConfig = DataConfig()
    model: ModelConfig
    optim: OptimConfig = OptimConfig()
    trainer: TrainerConfig = TrainerConfig()
    eval: EvalConfig = EvalConfig()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        problem = run_name_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("output_dir")
    @classmethod
    def _output_dir(cls, v: str) -> str:
        if "\0" in v:
            raise ValueError("a folder name cannot contain a NUL character")
        return v

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def _kind(value: object) -> str:
    """'a list', 'a number', 'text', ... for messages about a value of the wrong kind."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"text ({_shown(value)})"
    return "a list" if isinstance(value, list) else f"a {type(value).__name__}"


def _shown(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _config_error(error: ValidationError, where: str) -> ConfigError:
    """The first problem of a pydantic error as one line: the key, what was expected, what was given."""
    errs = sorted(error.errors(), key=lambda x: x["type"] != "extra_forbidden")
    err = errs[0]
    if err["type"] in ("extra_forbidden", "missing"):
        return config_error_from_pydantic(error, where, ExperimentConfig)
    key = ".".join(str(p) for p in err["loc"]) or "config"
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return ConfigError(f"{where}: {key}: {msg} (got {_shown(err.get('input'))})")


def validate_config(data: dict, where: str = "config") -> ExperimentConfig:
    """Typed config from a mapping; unknown keys are errors naming the nearest valid key, bad values errors naming
    the key and what it takes. Model options are checked against the model builder's signature (names and types),
    so ``model.depth: abc`` fails here, before any training; ``model.modalities: rgb`` is read as ``[rgb]``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a config is a mapping of sections (name, protocol, data, model, optim, trainer, "
                          f"eval), not {_kind(data)}")
    if any(not isinstance(k, str) for k in data):
        bad = next(k for k in data if not isinstance(k, str))
        raise ConfigError(f"{where}: key {bad!r} is not a name")
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise _config_error(e, where) from None
    from mfas.models.registry import check_options

    options = cfg.model.overrides
    checked = check_options(cfg.model.name, options, where=where)
    checked = _image_size(cfg, checked, where)
    if checked != options or any(type(checked[k]) is not type(options[k]) for k in options):
        cfg = cfg.model_copy(update={"model": ModelConfig(name=cfg.model.name, **checked)})
    return cfg


def _image_size(cfg: ExperimentConfig, options: dict, where: str) -> dict:
    """``data.image_size`` and the model's input size agree: a model with an ``img_size`` option is built for
    ``data.image_size`` unless ``model.img_size`` says otherwise, and two different sizes are an error here
    rather than a shape error at the first forward pass."""
    from mfas.models.registry import full_defaults

    size = cfg.data.image_size
    if size is None:
        return options
    defaults = full_defaults(cfg.model.name)
    if "img_size" not in defaults:
        return options  # checked against the built model (engine.train)
    given = options.get("img_size")
    if given is None:
        return {**options, "img_size": size}
    if given != size:
        raise ConfigError(f"{where}: data.image_size {size} and model.img_size {given} differ; the model takes "
                          f"{given}x{given} inputs. Set one of them (model.img_size follows data.image_size when "
                          "only that is given)")
    return options


def parse_set(s: str) -> tuple[list[str], object]:
    """``a.b.c=value`` as (key parts, value parsed as YAML); a :class:`ConfigError` naming the ``--set`` otherwise."""
    if not isinstance(s, str):
        raise ConfigError(f"bad --set {s!r}; write KEY=VALUE, e.g. optim.lr=1e-4")
    key, sep, raw = s.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"bad --set {s!r}; write KEY=VALUE, e.g. optim.lr=1e-4")
    parts = [p.strip() for p in key.strip().split(".")]
    if any(not p for p in parts):
        raise ConfigError(f"bad --set {s!r}: the key {key.strip()!r} has an empty part; write e.g. optim.lr=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError) as e:
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"--set {s!r}: the value of {key.strip()!r} is not valid YAML ({problem}); quote text "
                          f"that contains ':', '[', '{{' or '#'") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"--set {s!r}: the value of {key.strip()!r} must be a finite number")
    return parts, value


def apply_overrides(data: dict, sets: list[str]) -> dict:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a nested mapping, in order; ``data`` is not changed."""
    if not isinstance(data, dict):
        raise ConfigError(f"--set needs a config that is a mapping of sections, not {_kind(data)}")
    out = copy.deepcopy(data)
    for s in sets or []:
        parts, value = parse_set(s)
        node = out
        for i, p in enumerate(parts[:-1]):
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {s!r}: {'.'.join(parts[:i + 1])!r} is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def load_config(path: str | Path, sets: list[str] | None = None) -> ExperimentConfig:
    """Read, override and validate a config file. A missing, unreadable, non-UTF-8 or non-YAML file, or one that is
    not a mapping, is a :class:`ConfigError` naming the file."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such config file")
    if p.is_dir():
        raise ConfigError(f"{p}: a folder, not a config file")
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a text file (byte {e.start} is not UTF-8); a config is YAML text") from None
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config is a mapping of sections (name, protocol, model, ...), not {_kind(data)}")
    return validate_config(apply_overrides(data, sets or []), where=str(p))


def dump_config(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)

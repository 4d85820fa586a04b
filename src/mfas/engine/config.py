"""Experiment configuration: one YAML file, validated into typed objects, overridable by key."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from mfas.errors import ConfigError, config_error_from_pydantic
from mfas.metrics.thresholds import ThresholdPolicy


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    stores: dict[str, str] = {}  # store key -> folder; merged over datasets.yaml
    datasets_file: str | None = None
    image_size: int | None = None  # default: the model's input size
    batch_size: int = 32
    eval_batch_size: int = 64
    sampler: Literal["random", "class_balanced", "class_domain", "domain_groups"] = "class_balanced"
    batches_per_epoch: int | None = None  # default: ceil(train samples / batch size)
    workers: int = 0
    augment: bool = True


class ModelConfig(BaseModel):
    """``name`` plus any keyword the model's builder accepts (checked when the model is built)."""

    model_config = ConfigDict(extra="allow")
    name: str

    @property
    def overrides(self) -> dict:
        return dict(self.model_extra or {})


class OptimConfig(_Strict):
    name: Literal["adamw"] = "adamw"
    lr: float = 1e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup: float = 0.1  # fraction of all optimiser steps with linear warm-up
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr


class TrainerConfig(_Strict):
    max_epochs: int = 10
    max_steps: int = -1  # > 0 stops earlier than max_epochs
    precision: str = "32-true"  # "bf16-mixed" on GPU
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"  # "ddp" for several devices
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    deterministic: bool = False
    log_every_n_steps: int = 10
    progress: bool = True


class EvalConfig(_Strict):
    policies: list[str] = ["test_eer", "val_eer"]
    selection: Literal["last", "best_source_val", "oracle_target"] = "last"
    every_n_epochs: int = 1
    bundle_policy: str = "val_eer"  # the threshold stored in the inference bundle

    @field_validator("policies")
    @classmethod
    def _policies(cls, v: list[str]) -> list[str]:
        return [str(ThresholdPolicy.parse(p)) for p in v]


class ExperimentConfig(_Strict):
    name: str
    seed: int = 0
    protocol: str
    protocol_file: str | None = None
    output_dir: str = "runs"
    data: DataConfig = DataConfig()
    model: ModelConfig
    optim: OptimConfig = OptimConfig()
    trainer: TrainerConfig = TrainerConfig()
    eval: EvalConfig = EvalConfig()

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def _fields_at(path: list[str]) -> list[str]:
    cls: type[BaseModel] = ExperimentConfig
    for p in path:
        f = cls.model_fields.get(p)
        if f is None or not (isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)):
            return []
        cls = f.annotation
    return list(cls.model_fields)


def validate_config(data: dict, where: str = "config") -> ExperimentConfig:
    """Typed config from a mapping; unknown keys are errors naming the nearest valid key."""
    try:
        return ExperimentConfig(**data)
    except ValidationError as e:
        raise config_error_from_pydantic(e, where, _fields_at) from None


def apply_overrides(data: dict, sets: list[str]) -> dict:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a nested mapping, in order."""
    out = yaml.safe_load(yaml.safe_dump(data))  # deep copy of plain data
    for s in sets or []:
        key, sep, raw = s.partition("=")
        if not sep or not key:
            raise ConfigError(f"bad --set {s!r}; write KEY=VALUE, e.g. optim.lr=1e-4")
        parts = key.strip().split(".")
        node = out
        for i, p in enumerate(parts[:-1]):
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {s!r}: {'.'.join(parts[:i + 1])!r} is not a section")
            node = nxt
        value = yaml.safe_load(raw) if raw.strip() else ""
        node[parts[-1]] = value
    return out


def load_config(path: str | Path, sets: list[str] | None = None) -> ExperimentConfig:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such config file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config is a mapping of sections")
    return validate_config(apply_overrides(data, sets or []), where=str(p))


def dump_config(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)

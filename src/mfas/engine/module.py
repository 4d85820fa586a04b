"""The LightningModule that trains any registered model through the model interface."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
import torch.distributed as dist

from mfas.engine.config import OptimConfig
from mfas.errors import MetricError
from mfas.metrics import eer, roc_auc
from mfas.models.base import PadModel


def gather_scores(local: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(positions, scores) from every rank, sorted by position; each sample appears once."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, local)
        local = [x for p in parts for x in p]
    if not local:
        return np.zeros(0, np.int64), np.zeros(0)
    pos = np.array([p for p, _ in local], np.int64)
    sc = np.array([s for _, s in local], np.float64)
    order = np.argsort(pos, kind="stable")
    if np.unique(pos).size != pos.size:
        raise RuntimeError("a sample was scored twice across ranks")
    return pos[order], sc[order]


def score_batch(model: torch.nn.Module, batch: dict) -> list[tuple[int, float]]:
    """(dataset position, P(bona fide)) for every sample of ``batch``: how the engine scores a batch, in validation
    (:class:`PadModule`) and when scoring test sets (``mfas.engine.evaluation.Scorer``)."""
    scores = model(batch).score.detach().float().cpu().tolist()
    pos = batch["position"]
    pos = pos.tolist() if torch.is_tensor(pos) else list(pos)
    return list(zip(pos, scores, strict=True))


def lr_lambda(schedule: str, total: int, warmup: float, floor: float, steps_per_epoch: int = 1,
              step_epochs: int = 20, step_gamma: float = 0.5):
    """The lr multiplier of optimizer step ``step``: linear warm-up over ``warmup`` of the ``total`` steps, then
    cosine to ``floor``, constant, or ``step`` (times ``step_gamma`` every ``step_epochs`` epochs)."""
    warm = int(round(warmup * total))

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        if schedule == "step":
            return step_gamma ** (step // max(1, steps_per_epoch * step_epochs))
        t = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def adamw_kernel(groups: list[dict], precision: str = "32-true") -> dict:
    """``fused=True`` (one kernel per device and dtype for the whole update) where torch has the fused AdamW for
    every parameter's device and dtype, else ``foreach=True`` (a few multi-tensor kernels per group). Not under
    fp16 loss scaling, where Lightning cannot clip the gradients of an optimizer that unscales them itself."""
    params = [p for g in groups for p in g["params"]]
    if str(precision).startswith("16"):
        return {"foreach": True}
    fusable = ("cpu", "cuda", "xpu", "mps")
    if params and all(p.device.type in fusable and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
                      for p in params):
        return {"fused": True}
    return {"foreach": True}


class PadModule(L.LightningModule):
    """Wraps a :class:`PadModel`; logs every loss term; scores validation sets on all ranks.

    ``val_names[i]`` names validation dataloader ``i``: ``"select"`` for the sources' validation
    data, test-set names when the model-selection policy looks at targets (``oracle_target``).
    After each validation, ``history`` gains a row of AUC/EER per set, and ``best_epoch`` / ``best_value``
    follow the selection policy; the best weights themselves are written to the run folder by the run's
    checkpoint callback (``mfas.engine.train.RunCheckpoints``), not kept in memory.
    """

    def __init__(self, model: PadModel, optim: OptimConfig, total_steps: int, val_names: list[str],
                 val_labels: list[np.ndarray], selection: str = "last", steps_per_epoch: int | None = None):
        super().__init__()
        self.model, self.optim_cfg, self.total_steps = model, optim, total_steps
        self.steps_per_epoch = steps_per_epoch or total_steps
        self.val_names, self.val_labels, self.selection = val_names, val_labels, selection
        self._val: dict[int, list[tuple[int, float]]] = {}
        self.history: list[dict] = []
        self.best_value = float("inf")
        self.best_epoch = -1

    def forward(self, batch: dict):
        return self.model(batch)

    def on_train_epoch_start(self) -> None:
        self._opens_step = True

    def _steps_after(self) -> bool:
        """Whether the optimizer steps after this batch's backward, as Lightning's training loop decides it."""
        loop = getattr(getattr(self.trainer, "fit_loop", None), "epoch_loop", None)
        should_accumulate = getattr(loop, "_should_accumulate", None)
        return not should_accumulate() if callable(should_accumulate) else True

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        last = self._steps_after()
        self.model.accumulation_phase(getattr(self, "_opens_step", True), last)
        self._opens_step = last
        out = self.model(batch)
        losses = self.model.losses(batch, out)
        bs = batch["label"].shape[0]
        for k, v in losses.items():
            self.log(f"train/{k}", v.detach(), prog_bar=k == "loss", batch_size=bs, sync_dist=False)
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._val.setdefault(dataloader_idx, []).extend(score_batch(self.model, batch))

    def on_validation_epoch_start(self) -> None:
        self._val = {}

    def on_validation_epoch_end(self) -> None:
        row: dict = {"epoch": int(self.current_epoch), "step": int(self.global_step)}
        for i, name in enumerate(self.val_names):
            pos, sc = gather_scores(self._val.get(i, []))
            if pos.size != self.val_labels[i].size:
                continue  # sanity-check pass over a subset of batches
            y = self.val_labels[i][pos]
            try:
                row[f"{name}/auc"], row[f"{name}/eer"] = roc_auc(y, sc), eer(y, sc).eer
            except MetricError:
                continue
            self.log(f"val/{name}/auc", row[f"{name}/auc"], rank_zero_only=True)
            self.log(f"val/{name}/eer", row[f"{name}/eer"], prog_bar=name == "select", rank_zero_only=True)
        if self.trainer.sanity_checking or len(row) == 2:
            return
        self.history.append(row)
        value = self._selection_value(row)
        if value is not None and value < self.best_value:
            self.best_value, self.best_epoch = value, row["epoch"]

    def _selection_value(self, row: dict) -> float | None:
        if self.selection == "best_source_val":
            return row.get("select/eer")
        if self.selection == "oracle_target":
            vals = [row[f"{n}/eer"] for n in self.val_names if n != "select" and f"{n}/eer" in row]
            return float(np.mean(vals)) if vals else None
        return None

    def configure_optimizers(self):
        o = self.optim_cfg
        groups = self.model.param_groups(o.weight_decay)
        kind = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
        opt = kind(groups, lr=o.lr, betas=o.betas, **adamw_kernel(groups, self._precision()))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(o.schedule, self.total_steps, o.warmup,
                                                                 o.min_lr_ratio, self.steps_per_epoch, o.step_epochs,
                                                                 o.step_gamma))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _precision(self) -> str:
        try:
            return str(self.trainer.precision)
        except RuntimeError:  # not attached to a Trainer
            return "32-true"

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["mfas"] = {"best_value": self.best_value, "best_epoch": self.best_epoch,
                              "history": self.history}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        m = checkpoint.get("mfas", {})
        self.best_value = m.get("best_value", float("inf"))
        self.best_epoch = m.get("best_epoch", -1)
        self.history = list(m.get("history", []))

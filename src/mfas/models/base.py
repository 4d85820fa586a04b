"""The model interface every method implements (see docs/models.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mfas.conventions import MODALITIES
from mfas.errors import ConfigError, MfasError

#: CLIP-style and ImageNet-style statistics are per modality; grey depth/IR use one channel.
IMAGENET = {"rgb": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), "depth": ((0.5,), (0.5,)), "ir": ((0.5,), (0.5,))}


@dataclass
class ModelOutput:
    """What a model returns for a batch of B samples.

    ``features`` follows a contract (timm's ``forward_features`` idea, kept inside the one forward pass), which
    engine code such as t-SNE relies on; every registered model is tested against it:

    - ``"embedding"``: (B, D) float, D = ``model.num_features``: the representation the classification head
      reads (mmFAS: the fused feature; vit-concat: the concatenated class tokens; MMDA: the last U-DSA output);
    - ``"present"``: (B, M) bool over ``model.modalities``: which inputs the model treated as present (after any
      training-time modality dropout);
    - ``"cls_<m>"`` for every ``m`` in ``model.modalities``, when ``model.modal_features`` is True: (B, D_m) float,
      that modality's global feature (its class token or image embedding, an absent modality's stand-in included)
      as it enters fusion; D_m is the same for every modality.

    :meth:`PadModel.feature_keys` lists the contract keys a model provides. Other keys are the model's own
    (loss inputs, diagnostics: e.g. mmFAS's ``fused``, MMDA's ``final``, ``align_logits``) and may change.
    """

    logits: torch.Tensor  # (B, 2): index 0 attack, index 1 bona fide
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # the contract keys above, plus the model's own

    @property
    def score(self) -> torch.Tensor:
        """(B,) probability of bona fide."""
        return self.logits.float().softmax(-1)[:, 1]



def hide_modalities(present: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training-time modality dropout: each True of ``present`` (B, M) turns False with probability ``p``; a
    sample that would lose all its modalities keeps one of them, chosen at random. Returns a new (B, M) bool
    tensor."""
    draw = torch.rand((2, *present.shape), device=present.device, generator=generator)
    hidden = present & (draw[0] >= p)
    pick = torch.where(present, draw[1], torch.full_like(draw[1], -1.0)).argmax(1, keepdim=True)
    one = torch.zeros_like(present).scatter_(1, pick, True) & present
    return torch.where(hidden.any(1, keepdim=True), hidden, one)


class PadModel(nn.Module):
    """Base class: ``forward(batch) -> ModelOutput`` and ``losses(batch, output) -> {name: tensor}``.

    ``batch`` holds float tensors ``batch[m]`` (B, C, H, W) for each modality the model uses, the
    presence mask ``batch["present"]`` (B, M) over ``mfas.conventions.MODALITIES`` and ``batch["label"]``.
    Subclasses set ``modalities``, ``input_size``, ``norm_stats``, ``num_features`` and ``modal_features``,
    fill ``ModelOutput.features`` as :class:`ModelOutput` lays down, and keep every constructor argument in
    ``self.config`` so the model can be rebuilt from its bundle.
    """

    modalities: tuple[str, ...] = MODALITIES
    input_size: tuple[int, int] = (224, 224)
    norm_stats: dict = IMAGENET
    #: True when the model gives meaningful scores with some modalities absent.
    supports_missing: bool = False
    #: width D of ``features["embedding"]`` (set by every model)
    num_features: int = 0
    #: True when ``features`` holds ``cls_<m>`` for every modality the model uses
    modal_features: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.config: dict = {}

    def feature_keys(self) -> tuple[str, ...]:
        """The keys of ``ModelOutput.features`` this model promises (see :class:`ModelOutput`)."""
        modal = tuple(f"cls_{m}" for m in self.modalities) if self.modal_features else ()
        return ("embedding", "present", *modal)

    def require_features(self, keys: Sequence[str], purpose: str) -> None:
        """Raise :class:`~mfas.errors.MfasError`, naming the model, when it does not promise every key in ``keys``."""
        missing = [k for k in keys if k not in self.feature_keys()]
        if missing:
            name = self.config.get("name", type(self).__name__)
            raise MfasError(f"{purpose} needs features {', '.join(missing)}, which model {name!r} does not provide "
                            f"(it provides {', '.join(self.feature_keys())})")

    def present(self, batch: dict, modality: str) -> torch.Tensor:
        """(B,) bool: whether ``modality`` is present for each sample."""
        return batch["present"][:, MODALITIES.index(modality)].bool()

    def accumulation_phase(self, first: bool, last: bool) -> None:
        """Told by the engine before each training forward: whether this micro-batch opens an optimizer step
        (``first``) and whether the step follows its backward (``last``). A model whose parts only change at the
        optimizer step can compute them once per step (MMDA's text tower); the default ignores it."""

    def losses(self, batch: dict, output: ModelOutput) -> dict[str, torch.Tensor]:
        ce = F.cross_entropy(output.logits.float(), batch["label"].long())
        return {"ce": ce, "loss": ce}

    def no_weight_decay(self) -> set[str]:
        """Names (as in ``named_parameters()``) exempt from weight decay, beyond the generic rule of
        :meth:`param_groups`. The default gathers ``no_weight_decay()`` of every submodule that defines one
        (timm's convention, e.g. a ViT's ``cls_token`` and ``pos_embed``), prefixed with its path."""
        names: set[str] = set()
        for prefix, module in self.named_modules():
            if module is self:
                continue
            hook = getattr(module, "no_weight_decay", None)
            if callable(hook):
                names |= {f"{prefix}.{n}" for n in hook()}
        return names

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: no decay on biases, norm weights and other 0-/1-D parameters (scales,
        per-modality tokens) and on the names in :meth:`no_weight_decay` (class tokens, position
        embeddings, stacked per-expert biases and norms); decay on the rest. Only trainable parameters.
        A model that needs another grouping (MMDA ``compat: official``) overrides this."""
        exempt = self.no_weight_decay()
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            skip = p.ndim <= 1 or name.endswith(".bias") or name in exempt
            (no_decay if skip else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def cam_layers(self) -> dict[str, nn.Module]:
        """{modality: module whose output is that modality's tokens (B, 1 + h*w, D), class token first}, for
        Grad-CAM. Models that do not support explanations keep this default."""
        raise NotImplementedError(f"{type(self).__name__} does not name layers for Grad-CAM")

    def parameter_parts(self) -> list[tuple[str, list[nn.Parameter], bool]]:
        """(part name, its parameters, used at inference) for ``mfas models show``: top-level children, the
        entries of top-level ModuleDicts/ParameterDicts, and the class's ``training_only`` parts marked."""
        train_only = tuple(getattr(self, "training_only", ()))
        parts: list[tuple[str, list[nn.Parameter], bool]] = []
        for name, child in self.named_children():
            if isinstance(child, nn.ModuleDict | nn.ParameterDict):
                parts += [(f"{name}.{k}", list(v.parameters()) if isinstance(v, nn.Module) else [v],
                           name not in train_only) for k, v in child.items()]
            else:
                parts.append((name, list(child.parameters()), name not in train_only))
        return parts

    def export_view(self) -> nn.Module:
        """A module ``(rgb, depth, ir, present) -> score`` for ONNX export: the model's inference forward with
        positional tensors (``rgb`` (B, 3, H, W), ``depth`` and ``ir`` (B, 1, H, W) normalised, ``present``
        (B, 3) bool) and the (B,) P(bona fide) as output. Models whose inference cannot be written as one graph
        of fixed structure override this to raise a :class:`~mfas.errors.ConfigError` that says why."""
        if getattr(self, "inference_only", False):
            raise ConfigError(f"{self.config.get('name', type(self).__name__)}: an inference-only wrapper of a "
                              "released model; it is not exported")
        return ScoreView(self)

    def preprocessing(self) -> dict:
        """Everything an inference bundle needs to prepare inputs for this model."""
        return {"input_size": list(self.input_size), "modalities": list(self.modalities),
                "norm": {m: {"mean": list(self.norm_stats[m][0]), "std": list(self.norm_stats[m][1])}
                         for m in self.modalities}}


class ScoreView(nn.Module):
    """``model`` as ``(rgb, depth, ir, present) -> (B,) score``: the signature of an exported graph."""

    def __init__(self, model: PadModel):
        super().__init__()
        self.model = model

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor, ir: torch.Tensor, present: torch.Tensor
                ) -> torch.Tensor:
        return self.model({"rgb": rgb, "depth": depth, "ir": ir, "present": present}).score

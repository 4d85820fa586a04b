"""Scores of store rows under a loaded model, for the engine; inference on new captures is
:mod:`mfas.inference` (re-exported here for the engine's own use)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mfas.conventions import MODALITIES
from mfas.data.transforms import eval_transform
from mfas.inference.folders import (  # noqa: F401  (re-exported)
    PREDICTION_COLUMNS,
    folder_metrics,
    match_folders,
    predict_folders,
    write_predictions,
)
from mfas.inference.predictor import Prediction, Predictor, load  # noqa: F401


def model_transform(model):
    """The engine's evaluation transform for ``model`` (its input size and normalisation): store items
    (uint8 (C, H, W) tensors) -> model inputs. :mod:`mfas.inference.preprocess` is its numpy twin."""
    return eval_transform(tuple(model.input_size), model.norm_stats)


@torch.no_grad()
def score_rows(model, store, rows: np.ndarray, drop: Sequence[str] = (), batch_size: int = 128) -> np.ndarray:
    """P(bona fide) of store ``rows`` under a loaded model (eval mode, the engine's evaluation transform);
    ``drop``: modalities marked absent. Modalities the model does not take, or the store lacks, are absent."""
    from torch.utils.data import DataLoader

    from mfas.data.dataset import StoreDataset

    model.eval()
    absent = [m for m in MODALITIES if m not in model.modalities or m in drop]
    ds = StoreDataset(store, rows, modalities=MODALITIES, drop=absent,
                      transform=model_transform(model))
    out = [model(batch).score for batch in DataLoader(ds, batch_size=batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)

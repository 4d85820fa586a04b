"""Baseline models: one encoder per modality, features concatenated, a linear head."""

from mfas.models.baselines import cnn_concat, vit_concat  # noqa: F401

"""Baseline models used to drive and test the engine."""

from mfas.models.baselines import vit_concat  # noqa: F401

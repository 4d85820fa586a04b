"""Models: a registry (``create_model``, ``list_models``), shared layers, one folder per method."""

from mfas.models.base import ModelOutput, PadModel
from mfas.models.registry import create_model, list_models, model_defaults, register_model

__all__ = ["ModelOutput", "PadModel", "create_model", "list_models", "model_defaults", "register_model"]

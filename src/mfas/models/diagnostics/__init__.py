"""Deliberately broken models: known wrong answers for the evidence suite (``mfas check``). Never for use."""

from mfas.models.diagnostics import severed  # noqa: F401

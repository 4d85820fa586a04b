"""Layers and weight readers shared by several methods (no models are registered here)."""

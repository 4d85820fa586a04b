"""SimFAS: a procedural multimodal (RGB, depth, NIR) PAD benchmark. See docs/simfas.md."""

from mfas.data.synth.domains import PROFILES, DomainProfile, get_profile
from mfas.data.synth.generate import generate_store, plan, render

__all__ = ["PROFILES", "DomainProfile", "generate_store", "get_profile", "plan", "render"]

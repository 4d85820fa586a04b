"""Conventions every layer of mfas agrees on (see docs/conventions.md).

This module is at the very bottom of the package: it imports nothing from mfas and
nothing heavier than the standard library.
"""

from __future__ import annotations

#: Modality names in their canonical order. Every presence mask follows this order.
MODALITIES: tuple[str, ...] = ("rgb", "depth", "ir")

#: Modalities mfas knows of; the first three are the ones the models use today.
KNOWN_MODALITIES: tuple[str, ...] = ("rgb", "depth", "ir", "thermal", "swir")

#: Channels stored per modality (uint8, H x W x C for colour, H x W for single channel).
MODALITY_CHANNELS: dict[str, int] = {"rgb": 3, "depth": 1, "ir": 1, "thermal": 1, "swir": 1}

#: label = 1 is bona fide (live), label = 0 is an attack. Scores are P(bona fide).
BONAFIDE: int = 1

#: Presentation attack instrument species, one string per sample.
PAI_SPECIES: tuple[str, ...] = (
    "bonafide",
    "print",
    "replay",
    "cut",
    "mask_rigid",
    "mask_flexible",
    "mask_paper",
    "partial",
    "makeup",
    "other",
)

#: Canonical split names. Adapters map a dataset's own names (dev, eval, ...) onto these.
SPLITS: tuple[str, ...] = ("train", "val", "test")


def order_modalities(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Return ``names`` de-duplicated and sorted into the canonical modality order.

    Raises ``ValueError`` naming the first unknown modality.
    """
    unknown = [n for n in names if n not in KNOWN_MODALITIES]
    if unknown:
        raise ValueError(f"unknown modality {unknown[0]!r}; known: {', '.join(KNOWN_MODALITIES)}")
    return tuple(m for m in KNOWN_MODALITIES if m in set(names))


def parse_modalities(text: str) -> tuple[str, ...]:
    """Parse ``"rgb,depth"`` or ``"rgb+depth"`` into canonical order."""
    parts = [p.strip() for p in text.replace("+", ",").split(",") if p.strip()]
    if not parts:
        raise ValueError("empty modality list")
    return order_modalities(parts)

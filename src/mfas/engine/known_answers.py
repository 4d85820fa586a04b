"""The known-answer suite (``mfas check``): experiments whose outcome is known in advance, so that a broken
implementation shows up as a failed check instead of a plausible table.

It generates a SimFAS store of one capture set-up (``profiles/check/known_answers.yaml``: domain W recorded in one
session, so that no capture bias gives every modality a shortcut), trains small models on it and compares what comes
out with what the cue table of docs/simfas.md predicts:

* ``shuffled``: labels permuted in training -> AUC on unseen data within 50 +- 5;
* ``carrier``: models given RGB only, depth only, IR only: on each species the modality that carries its cue wins;
* ``removal``: taking a modality away at test (presence mask False) costs AUC on the species only it carries,
  and not on the species it carries nothing for;
* ``severed``: a model whose IR is cut off from its head (the ``severed`` diagnostic model) moves no score when IR
  changes (per-modality sensitivity) and misses the species only IR carries;
* ``repeat``: the same config and seed trained twice -> identical scores.

Every check reports what was expected and what was measured; :func:`run_checks` returns them all.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from mfas.data import open_store
from mfas.data.dataset import StoreDataset
from mfas.data.synth.domains import load_profiles
from mfas.data.transforms import eval_transform
from mfas.metrics.core import roc_auc

#: the capture set-up the suite generates (a variant of SimFAS domain W)
PROFILE_FILE = Path(__file__).resolve().parents[1] / "data" / "synth" / "profiles" / "check" / "known_answers.yaml"
DOMAIN = "W"

#: species -> the modalities that carry its cue in the suite's set-up (docs/simfas.md, the cue table). Depth sees
#: the flat or bent sheet of a print and the flat screen of a replay; NIR sees bare paper (no skin shading, no
#: darker eyes) and a dark panel, the uniform resin of a rigid mask, the silicone and seam of a flexible one and
#: the pupil-less printed eyes and frame of glasses. The plane of glasses is a depth cue too small to learn at
#: this scale (a depth-only model: AUC 47 on partial), so partial is listed under NIR alone.
CARRIERS: dict[str, tuple[str, ...]] = {
    "print": ("depth", "ir"),
    "replay": ("depth", "ir"),
    "mask_rigid": ("ir",),
    "mask_flexible": ("ir",),
    "partial": ("ir",),
}

#: a check passes within these margins (AUC points, %)
SHUFFLED_TOLERANCE = 5.0
REMOVAL_DROP = 5.0
SEVERED_DROP = 5.0
#: a severed modality moves the score by less than this fraction of what the intact model's does
SEVERED_SENSITIVITY = 0.05


@dataclass
class Check:
    """One known answer: what was expected, what was measured, and whether they agree."""

    name: str
    expected: str
    measured: str
    passed: bool
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    """The suite's sizes. The defaults take about 10 minutes on 2 CPU cores."""

    per_domain: int = 2000
    image_size: int = 112
    epochs: int = 8
    model: str = "cnn-concat-tiny"
    seed: int = 0
    modality_dropout: float = 0.3
    repeat_epochs: int = 1


@dataclass
class Scored:
    """Scores of one model on the suite's unseen samples (validation and test split)."""

    labels: np.ndarray
    scores: np.ndarray
    pai: np.ndarray

    def auc(self, species: str | None = None) -> float:
        """AUC in %, of bona fide against every attack or against one species."""
        keep = np.ones(len(self.labels), bool) if species is None else (self.labels == 1) | (self.pai == species)
        return 100.0 * roc_auc(self.labels[keep], self.scores[keep])


def _config(out: Path, store: Path, name: str, s: Settings, model: dict, epochs: int | None = None,
            shuffle: bool = False) -> dict:
    return {
        "name": name, "seed": s.seed, "protocol": f"sim/in/{DOMAIN}", "output_dir": str(out / "runs"),
        "data": {"stores": {"sim": str(store)}, "image_size": s.image_size, "batch_size": 32,
                 "sampler": "class_balanced", "augment": True, "shuffle_labels": shuffle},
        "model": {"img_size": s.image_size, **model},
        "optim": {"lr": 1e-3, "weight_decay": 0.05, "schedule": "cosine", "warmup": 0.1},
        "trainer": {"max_epochs": epochs or s.epochs, "deterministic": True, "accelerator": "cpu",
                    "progress": False},
        "eval": {"policies": ["test_eer", "val_eer"], "selection": "last"},
    }


def _unseen(store) -> np.ndarray:
    """Store rows the suite scores: the validation and test splits (never trained on)."""
    return store.select(split=["val", "test"])


def score_run(run: Path, store_path: Path, drop: Sequence[str] = (), batch_size: int = 128) -> Scored:
    """Score the bundle in ``run`` on the unseen rows of ``store_path``; ``drop`` marks modalities absent
    (presence False, zeros)."""
    from mfas.engine.io import load_bundle
    from mfas.engine.predict import score_rows

    model, _ = load_bundle(run)
    store = open_store(store_path)
    idx = _unseen(store)
    s = score_rows(model, store, idx, drop=drop, batch_size=batch_size)
    return Scored(store.labels[idx], s, np.asarray(store.column("pai")[idx]).astype(str))


def sensitivity(run: Path, store_path: Path, seed: int = 0, limit: int = 512,
                rows: np.ndarray | None = None) -> dict[str, float]:
    """Mean |change of P(bona fide)| when one modality's input is swapped between samples (a random
    permutation), per modality of the run's model; ``rows`` of the store (default: its unseen rows), at most
    ``limit`` of them. A modality the fusion ignores gives 0."""
    from mfas.engine.io import load_bundle

    model, _ = load_bundle(run)
    model.eval()
    store = open_store(store_path)
    idx = np.random.default_rng(seed).permutation(_unseen(store) if rows is None else rows)[:limit]
    ds = StoreDataset(store, idx, transform=eval_transform(tuple(model.input_size), model.norm_stats))
    batch = next(iter(DataLoader(ds, batch_size=len(ds))))
    perm = torch.from_numpy(np.random.default_rng(seed + 1).permutation(len(ds)))
    out = {}
    with torch.no_grad():
        base = model(batch).score
        for m in model.modalities:
            swapped = dict(batch)
            swapped[m] = batch[m][perm]
            out[m] = float((model(swapped).score - base).abs().mean())
    return out


def _fmt(d: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in d.items())


def check_shuffled(sc: Scored) -> Check:
    auc = sc.auc()
    ok = abs(auc - 50.0) <= SHUFFLED_TOLERANCE
    return Check("shuffled", f"AUC within 50 +- {SHUFFLED_TOLERANCE:g} (labels permuted in training)",
                 f"AUC {auc:.1f} on {len(sc.labels)} unseen samples", ok, {"auc": auc})


def check_carriers(single: dict[str, Scored]) -> Check:
    table = {sp: {m: sc.auc(sp) for m, sc in single.items()} for sp in CARRIERS}
    wrong = []
    for sp, carriers in CARRIERS.items():
        best = max(table[sp].values())
        if max(table[sp][m] for m in carriers) < best:
            winner = max(table[sp], key=table[sp].get)
            wrong.append(f"{sp}: {winner} wins ({_fmt(table[sp])}), expected {'/'.join(carriers)}")
    measured = "; ".join(f"{sp}: {_fmt(v)}" for sp, v in table.items())
    return Check("carrier", "on each species a modality that carries its cue wins: "
                 + ", ".join(f"{sp} -> {'/'.join(c)}" for sp, c in CARRIERS.items()),
                 measured + (" | WRONG " + "; ".join(wrong) if wrong else ""), not wrong, {"auc": table})


def check_removal(full: Scored, without: dict[str, Scored]) -> Check:
    """Without modality m: the species only m carries lose >= REMOVAL_DROP points of AUC; the species m carries
    nothing for lose less (the model was trained with modality dropout, so it copes with m missing)."""
    rows, bad, expected = {}, [], []
    for m, sc in without.items():
        only = [sp for sp, c in CARRIERS.items() if c == (m,)]
        unrelated = [sp for sp, c in CARRIERS.items() if m not in c]
        drops = {sp: full.auc(sp) - sc.auc(sp) for sp in CARRIERS}
        rows[m] = drops
        bad += [f"without {m}, {sp} drops {drops[sp]:.1f}" for sp in only if drops[sp] < REMOVAL_DROP]
        bad += [f"without {m}, {sp} (not carried by {m}) drops {drops[sp]:.1f}" for sp in unrelated
                if drops[sp] >= REMOVAL_DROP]
        expected.append(f"without {m}: " + "; ".join(
            part for part in (f"{', '.join(only)} drop by >= {REMOVAL_DROP:g}" if only else "",
                              f"{', '.join(unrelated)} drop by < {REMOVAL_DROP:g}" if unrelated else "") if part))
    measured = "; ".join(f"without {m}: AUC drop {_fmt(d)}" for m, d in rows.items())
    return Check("removal", " | ".join(expected), measured + (" | WRONG " + "; ".join(bad) if bad else ""),
                 not bad, {"drop": rows})


def check_severed(intact: Scored, severed: Scored, sens_intact: dict[str, float], sens_severed: dict[str, float],
                  modality: str) -> Check:
    only = [sp for sp, c in CARRIERS.items() if c == (modality,)]
    drops = {sp: intact.auc(sp) - severed.auc(sp) for sp in only}
    ratio = sens_severed[modality] / max(sens_intact[modality], 1e-12)
    ok_sens = ratio < SEVERED_SENSITIVITY
    ok_auc = all(d >= SEVERED_DROP for d in drops.values())
    return Check("severed", f"{modality} cut off from the head: its sensitivity < {SEVERED_SENSITIVITY:g} x the "
                 f"intact model's, and AUC on {', '.join(only)} lower by >= {SEVERED_DROP:g}",
                 f"sensitivity {modality}: severed {sens_severed[modality]:.4f} vs intact "
                 f"{sens_intact[modality]:.4f} ({ratio:.3f} x); AUC drop {_fmt(drops)}",
                 ok_sens and ok_auc, {"sensitivity_intact": sens_intact, "sensitivity_severed": sens_severed,
                                      "drop": drops})


def check_repeat(a: Path, b: Path) -> Check:
    fa, fb = sorted((a / "scores").glob("*.csv")), sorted((b / "scores").glob("*.csv"))
    same = bool(fa) and [f.name for f in fa] == [f.name for f in fb] and all(
        x.read_bytes() == y.read_bytes() for x, y in zip(fa, fb, strict=True))
    return Check("repeat", "the same config and seed trained twice give byte-identical score files",
                 f"{len(fa)} score files {'identical' if same else 'DIFFER'}", same)


def run_checks(out: Path, settings: Settings = Settings(), only: Sequence[str] | None = None,
               say: Callable[[str], None] = print, workers: int | None = None, reuse: bool = False) -> list[Check]:
    """Generate the suite's store under ``out``, train what the selected checks need, and return the checks.
    ``only`` restricts to some of ``shuffled, carrier, removal, severed, repeat``. ``reuse`` keeps finished runs
    in ``out`` whose config is the one the suite would train (the verdicts are computed again)."""
    from mfas.data.synth import generate_store
    from mfas.engine.config import dump_config, validate_config
    from mfas.engine.train import train

    names = tuple(only or ("shuffled", "carrier", "removal", "severed", "repeat"))
    s = settings
    store = out / "simfas-check"
    profiles = load_profiles(PROFILE_FILE)
    say(f"generating {s.per_domain} samples of the known-answer set-up at {s.image_size}^2 ...")
    # deterministic: the same store again when runs are reused
    generate_store(store, per_domain=s.per_domain, domains=(DOMAIN,), size=s.image_size, seed=s.seed,
                   workers=workers, overwrite=True, profiles=profiles)
    runs: dict[str, Path] = {}

    def fit(name: str, model: dict, **kw) -> Path:
        if name not in runs:
            cfg = validate_config(_config(out, store, name, s, model, **kw), where=f"check {name}")
            done = cfg.run_dir / "metrics.json"
            if reuse and done.exists() and (cfg.run_dir / "config.yaml").read_text() == dump_config(cfg):
                say(f"reusing {cfg.run_dir}")
                runs[name] = cfg.run_dir
                return runs[name]
            if cfg.run_dir.exists():
                shutil.rmtree(cfg.run_dir)
            say(f"training {name} ...")
            runs[name] = train(cfg)
        return runs[name]

    full = {"name": s.model, "modality_dropout": s.modality_dropout}
    results: list[Check] = []
    if "shuffled" in names:
        results.append(check_shuffled(score_run(fit("shuffled", {"name": s.model}, shuffle=True), store)))
    if "carrier" in names:
        single = {m: score_run(fit(f"only-{m}", {"name": s.model, "modalities": [m]}), store)
                  for m in ("rgb", "depth", "ir")}
        results.append(check_carriers(single))
    if "removal" in names:
        run = fit("all", full)
        results.append(check_removal(score_run(run, store), {m: score_run(run, store, drop=[m])
                                                              for m in ("depth", "ir")}))
    if "severed" in names:
        intact = fit("all", full)
        cut = fit("severed-ir", {"name": "severed", "base": s.model, "sever": "ir"})
        results.append(check_severed(score_run(intact, store), score_run(cut, store), sensitivity(intact, store),
                                     sensitivity(cut, store), "ir"))
    if "repeat" in names:
        a = fit("repeat-a", {"name": s.model}, epochs=s.repeat_epochs)
        b = fit("repeat-b", {"name": s.model}, epochs=s.repeat_epochs)
        results.append(check_repeat(a, b))
    return results

"""Inference on new captures from a bundle: ``mfas.load(run).predict(rgb=..., depth=..., ir=...)``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mfas.conventions import MODALITIES, MODALITY_CHANNELS
from mfas.data.faces import CropPolicy, Face, FaceDetector
from mfas.data.images import conform, fit_size, max_pixels, read_image
from mfas.data.transforms import eval_transform
from mfas.engine.io import load_bundle
from mfas.errors import ConfigError, DataError, MfasError


@dataclass(frozen=True)
class Prediction:
    score: float | None  # P(bona fide); None when no face was found
    decision: str  # "bonafide" or "attack" at the bundle's threshold, or "no_face"
    threshold: float
    policy: str  # how the threshold was chosen
    modalities: tuple[str, ...]  # the modalities that were used
    face: Face | None = None  # the face that was scored (bundles with a crop policy), in the frame's pixels

    @property
    def is_bonafide(self) -> bool:
        return self.decision == "bonafide"

    def as_dict(self) -> dict:
        return {"score": self.score, "decision": self.decision, "threshold": self.threshold, "policy": self.policy,
                "modalities": list(self.modalities), "face": None if self.face is None else self.face.as_dict()}


class Predictor:
    """A trained model with its preprocessing and operating point. Deterministic, batch-independent."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", threshold: float | None = None):
        """``threshold``: decide at this score instead of the bundle's (policy ``given``)."""
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError, ValueError) as e:
            raise ConfigError(f"device {device!r}: {str(e).splitlines()[0] if str(e) else 'not a device'}") from None
        self.model, self.meta = load_bundle(path)  # every key used below is checked there
        try:
            self.model.to(self.device).eval()
        except (RuntimeError, AssertionError) as e:  # e.g. cuda on a machine without one
            raise ConfigError(f"device {device!r}: cannot be used ({str(e).splitlines()[0]})") from None
        pre = self.meta["preprocessing"]
        self.size = tuple(pre["input_size"])
        self.modalities = tuple(pre["modalities"])
        self.norm = {m: (tuple(v["mean"]), tuple(v["std"])) for m, v in pre["norm"].items()}
        self.transform = eval_transform(self.size, self.norm)
        self.threshold = float(self.meta["threshold"]["value"])
        self.policy = str(self.meta["threshold"]["policy"])
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
                raise ConfigError(f"threshold must be a score between 0 and 1, got {threshold!r}")
            self.threshold, self.policy = float(threshold), "given"
        self.supports_missing = bool(self.meta["supports_missing"])
        # how the training images were made from captures: crop around the face, then the store's resize
        self.store_size = tuple(pre["store_size"]) if pre.get("store_size") else None
        self.crop = CropPolicy.from_dict(pre["crop"], where="model.json: preprocessing.crop") \
            if pre.get("crop") else None
        self.detector = FaceDetector(self.crop) if self.crop is not None else None

    def _inputs(self, rgb: object, depth: object, ir: object) -> dict[str, np.ndarray]:
        """The given images of the model's modalities as checked uint8 arrays of one size."""
        given = {"rgb": rgb, "depth": depth, "ir": ir}
        used = tuple(m for m in MODALITIES if given[m] is not None and m in self.modalities)
        if not used:
            raise MfasError(f"no input for any of the model's modalities ({', '.join(self.modalities)})")
        ignored = [m for m in MODALITIES if given[m] is not None and m not in self.modalities]
        if ignored:
            raise MfasError(f"the model does not use {', '.join(ignored)}; it takes {', '.join(self.modalities)}")
        absent = [m for m in self.modalities if m not in used]
        if absent and not self.supports_missing:
            raise MfasError(f"this model needs {', '.join(self.modalities)}; missing: {', '.join(absent)}")
        arrays = {m: self._load(m, given[m]) for m in used}
        sizes = {a.shape[:2] for a in arrays.values()}
        if len(sizes) > 1:
            sizes_txt = ", ".join(f"{m} {a.shape[1]}x{a.shape[0]}" for m, a in arrays.items())
            raise MfasError(f"the modalities differ in size ({sizes_txt}); give pixel-aligned images of one size")
        return arrays

    def _load(self, m: str, image: object) -> np.ndarray:
        """One modality as a uint8 H x W x 3 (rgb) or H x W array, checked like store inputs."""
        if isinstance(image, str | Path):
            return read_image(image, m)
        arr = np.asarray(image)
        if arr.ndim >= 2 and arr.shape[0] * arr.shape[1] > max_pixels():
            raise DataError(f"{m} array", f"image of {arr.shape[1]}x{arr.shape[0]} exceeds the limit of "
                                          f"{max_pixels():,} pixels")
        return conform(arr, m, f"{m} array")

    def faces(self, rgb: object) -> list[Face]:
        """The faces the bundle's crop policy finds in an RGB frame (path or array), largest first."""
        if self.detector is None:
            raise MfasError("this model has no crop policy (it was trained on a store prepared without --detect): "
                            "it scores whole images as given")
        return self.detector.detect(self._load("rgb", rgb))

    @torch.no_grad()
    def _score(self, arrays: dict[str, np.ndarray]) -> float:
        """P(bona fide) of one prepared capture (arrays at the stored size)."""
        h, w = next(iter(arrays.values())).shape[:2]
        item: dict = {m: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1) if a.ndim == 3
                      else torch.from_numpy(np.ascontiguousarray(a))[None] for m, a in arrays.items()}
        item = {m: item.get(m, torch.zeros(MODALITY_CHANNELS[m], h, w, dtype=torch.uint8)) for m in MODALITIES}
        item["present"] = torch.tensor([m in arrays for m in MODALITIES])
        # the evaluation transform of the engine, so a prediction equals the run's own scores
        item = self.transform(item)
        batch = {k: (v[None].to(self.device) if torch.is_tensor(v) else v) for k, v in item.items()}
        return float(self.model(batch).score[0])

    def _decide(self, arrays: dict[str, np.ndarray], face: Face | None) -> Prediction:
        if face is not None:
            arrays = self.crop.crop(arrays, face)
        if self.store_size is not None:  # as the store resized its images, so a file scores as its stored sample
            arrays = {m: fit_size(a, self.store_size, True, m, m) for m, a in arrays.items()}
        score = self._score(arrays)
        return Prediction(score=score, decision="bonafide" if score >= self.threshold else "attack",
                          threshold=self.threshold, policy=self.policy, modalities=tuple(arrays), face=face)

    def predict(self, rgb: object = None, depth: object = None, ir: object = None) -> Prediction:
        """Score one presentation. Images: file paths or uint8 arrays (RGB order, H x W x 3 / H x W), pixel-aligned.

        With a crop policy in the bundle the face is found in RGB and the largest one is cropped from every
        modality as the training data was; no face gives ``decision == "no_face"`` (and no score)."""
        results = self.predict_all(rgb=rgb, depth=depth, ir=ir, largest_only=True)
        return results[0]

    def predict_all(self, rgb: object = None, depth: object = None, ir: object = None,
                    largest_only: bool = False) -> list[Prediction]:
        """Score every face of the frame (largest first); one ``no_face`` result when there is none. Without a
        crop policy the whole images are one presentation."""
        arrays = self._inputs(rgb, depth, ir)
        if self.crop is None:
            return [self._decide(arrays, None)]
        if "rgb" not in arrays:
            raise MfasError("this model crops around the face it finds in RGB (its crop policy); give an RGB image")
        faces = self.detector.detect(arrays["rgb"])
        if not faces:
            return [Prediction(score=None, decision="no_face", threshold=self.threshold, policy=self.policy,
                               modalities=tuple(arrays))]
        return [self._decide(arrays, f) for f in (faces[:1] if largest_only else faces)]


@torch.no_grad()
def score_rows(model, store, rows: np.ndarray, drop: Sequence[str] = (), batch_size: int = 128) -> np.ndarray:
    """P(bona fide) of store ``rows`` under a loaded model (eval mode, the engine's evaluation transform);
    ``drop``: modalities marked absent. Modalities the model does not take, or the store lacks, are absent."""
    from torch.utils.data import DataLoader

    from mfas.data.dataset import StoreDataset

    model.eval()
    absent = [m for m in MODALITIES if m not in model.modalities or m in drop]
    ds = StoreDataset(store, rows, modalities=MODALITIES, drop=absent,
                      transform=eval_transform(tuple(model.input_size), model.norm_stats))
    out = [model(batch).score for batch in DataLoader(ds, batch_size=batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def load(path: str | Path, device: str = "cpu", threshold: float | None = None) -> Predictor:
    """Load a run folder or bundle for inference. Nothing is unpickled."""
    return Predictor(path, device, threshold)


# ------------------------------------------------------------------------------------------------ folders

def _listing(items: list[str], n: int = 5) -> str:
    more = f", and {len(items) - n} more" if len(items) > n else ""
    return "; ".join(items[:n]) + more


def match_folders(dirs: dict[str, Path], out: Path | None = None
                  ) -> tuple[dict[str, dict[str, Path]], list[Path], dict[str, tuple[int, str]]]:
    """The presentations in per-modality folders, matched by file stem: ({name: {modality: file}}, files skipped
    because their suffix is not an image format's, {name: (label, species)}).

    A folder holds images, or class folders of images (``live/``, ``attack/``, a PAI species name: the names
    ``mfas data prepare folder`` reads), whose presentations are named ``class/stem`` and labelled. Refused, with a
    :class:`DataError` naming the folder: a folder that is missing or not a folder, a subfolder that is not a
    class name, images beside class folders, two images of one name in a folder (``a.png`` and ``a.jpg``),
    ``out`` among the images, and folders without a single image."""
    from mfas.data.images import IMAGE_SUFFIXES, describe_missing
    from mfas.data.prepare.folder import class_of

    found: dict[str, dict[str, Path]] = {}
    labels: dict[str, tuple[int, str]] = {}
    skipped: list[Path] = []
    for m, d in dirs.items():
        d = Path(d)
        if not d.exists():
            raise DataError(d, f"--{m}-dir: {describe_missing(d)}")
        if not d.is_dir():
            raise DataError(d, f"--{m}-dir: not a folder")
        entries = _entries(d, m)
        subdirs = [f for f in entries if f.is_dir()]
        groups: list[tuple[str, list[Path], tuple[int, str] | None]] = []
        if subdirs:
            loose = [f.name for f in entries if not f.is_dir() and f.suffix.lower() in IMAGE_SUFFIXES]
            if loose:
                raise DataError(d, f"--{m}-dir: holds images ({_listing(loose, 3)}) beside class folders "
                                   f"({_listing([f.name for f in subdirs], 3)}); keep one or the other")
            unknown = [f.name for f in subdirs if class_of(f.name) is None]
            if unknown:
                raise DataError(d, f"--{m}-dir: subfolder(s) {_listing(unknown, 5)} are not class names (live, "
                                   "bonafide, real, attack, spoof, fake or a PAI species such as print or replay); "
                                   "a folder holds images, or one folder of images per class")
            groups = [(f"{sub.name}/", _entries(sub, m), class_of(sub.name)) for sub in subdirs]
        else:
            groups = [("", entries, None)]
        for prefix, files, cls in groups:
            by_name: dict[str, list[Path]] = {}
            for f in files:
                if f.is_dir():
                    raise DataError(f, f"--{m}-dir: a folder inside a class folder; images go directly in it")
                if f.suffix.lower() not in IMAGE_SUFFIXES:
                    skipped.append(f)
                    continue
                by_name.setdefault(prefix + f.stem, []).append(f)
            clashes = [" and ".join(f.name for f in fs) for fs in by_name.values() if len(fs) > 1]
            if clashes:
                raise DataError(d, f"--{m}-dir: several images of one name, which would be scored as one "
                                   f"presentation: {_listing(clashes)}; keep one file per name")
            if out is not None and any(f.resolve() == Path(out).resolve() for fs in by_name.values() for f in fs):
                raise DataError(out, f"--out: is one of the images in --{m}-dir {d}")
            for name, fs in by_name.items():
                found.setdefault(name, {})[m] = fs[0]
                if cls is not None:
                    labels[name] = cls
    if not found:
        where = ", ".join(f"--{m}-dir {d}" for m, d in dirs.items())
        what = "nothing to score: no image files (" + ", ".join(f"*{s}" for s in IMAGE_SUFFIXES) + f") in {where}"
        raise DataError(", ".join(str(d) for d in dirs.values()), what)
    return dict(sorted(found.items())), skipped, labels


def _entries(d: Path, m: str) -> list[Path]:
    try:
        return sorted(d.iterdir())
    except OSError as e:
        raise DataError(d, f"--{m}-dir: cannot be listed ({e.strerror or e})") from None


def predict_folders(p: Predictor, inputs: dict[str, dict[str, Path]], dirs: dict[str, Path],
                    allow_missing: bool = False, all_faces: bool = False,
                    labels: dict[str, tuple[int, str]] | None = None) -> list[list[str]]:
    """Score every presentation of :func:`match_folders`: rows of :data:`PREDICTION_COLUMNS` (``face``: the
    scored face's box ``x y w h`` for bundles with a crop policy; with ``all_faces`` one row per face, named
    ``name#k``; ``label`` and ``pai`` from the class folders, empty without).

    Checked first: every folder is of a modality the model uses, and every name has every modality the model
    takes; names that lack one are scored with what they have only with ``allow_missing``, and only when the
    model supports missing modalities. A file that cannot be read gives its row an error; the others are scored.
    """
    labels = labels or {}
    unused = [m for m in dirs if m not in p.modalities]
    if unused:
        flags = ", ".join(f"--{m}-dir" for m in unused)
        raise ConfigError(f"{flags}: the model does not use {', '.join(unused)}; it takes {', '.join(p.modalities)}")
    if allow_missing and not p.supports_missing:
        raise ConfigError(f"--allow-missing: this model does not support missing modalities; give a folder of each "
                          f"of {', '.join(p.modalities)} with every name in each")
    lacking = {name: [m for m in p.modalities if m not in files] for name, files in inputs.items()}
    lacking = {name: ms for name, ms in lacking.items() if ms}
    if lacking and not allow_missing:
        no_dir = [m for m in p.modalities if m not in dirs]
        where = ", ".join(str(d) for d in dirs.values())
        listing = _listing([f"{n} (no {', '.join(ms)})" for n, ms in lacking.items()], 8)
        hint = ("pass --allow-missing to score them with the modalities they have" if p.supports_missing
                else "this model does not support missing modalities")
        given = f"; no folder was given for {', '.join(no_dir)}" if no_dir else ""
        raise DataError(where, f"{len(lacking)} of {len(inputs)} names lack a modality the model takes "
                               f"({', '.join(p.modalities)}){given}: {listing}; {hint}")
    rows = []
    for name, files in inputs.items():
        label, pai = (str(labels[name][0]), labels[name][1]) if name in labels else ("", "")
        try:
            results = p.predict_all(**files, largest_only=not all_faces)
        except MfasError as e:
            rows.append([name, "", "", label, pai, "+".join(m for m in MODALITIES if m in files), "", str(e)])
            continue
        for k, r in enumerate(results):
            box = "" if r.face is None else " ".join(f"{v:.1f}" for v in r.face.box)
            rows.append([f"{name}#{k}" if len(results) > 1 else name, "" if r.score is None else f"{r.score:.6f}",
                         r.decision, label, pai, "+".join(r.modalities), box, ""])
    return rows


#: the columns of a predictions CSV
PREDICTION_COLUMNS = ("name", "score", "decision", "label", "pai", "modalities", "face", "error")


def folder_metrics(rows: list[list[str]], threshold: float, policy: str) -> dict | None:
    """Metrics of labelled predictions (class folders) at the predictor's threshold: AUC, APCER, BPCER, ACER,
    APCER per species; presentations without a face or with an error are counted, not scored (ISO/IEC 30107-3
    reports failures to acquire apart). None without labels."""
    from mfas.metrics.core import roc_auc
    from mfas.metrics.evaluate import rates_at

    col = {c: i for i, c in enumerate(PREDICTION_COLUMNS)}
    labelled = [r for r in rows if r[col["label"]] != ""]
    if not labelled:
        return None
    scored = [r for r in labelled if r[col["score"]] != ""]
    out: dict = {"threshold": threshold, "policy": policy, "n": len(labelled), "n_scored": len(scored),
                 "no_face": {c: sum(r[col["decision"]] == "no_face" and r[col["label"]] == v for r in labelled)
                             for c, v in (("bonafide", "1"), ("attack", "0"))},
                 "errors": sum(r[col["error"]] != "" for r in labelled)}
    y = np.array([int(r[col["label"]]) for r in scored])
    s = np.array([float(r[col["score"]]) for r in scored])
    pai = np.array([r[col["pai"]] for r in scored])
    out["n_bonafide"], out["n_attack"] = int((y == 1).sum()), int((y == 0).sum())
    if out["n_bonafide"] and out["n_attack"]:
        out["auc"] = roc_auc(y, s)
        out.update({k: v for k, v in rates_at(y, s, threshold, pai).items() if k != "threshold"})
    return out


def write_predictions(out: Path, rows: list[list[str]]) -> Path:
    """``out`` as a CSV (:data:`PREDICTION_COLUMNS`), written atomically: a failure leaves any earlier file as it
    was."""
    import csv
    import io

    from mfas.engine.io import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(PREDICTION_COLUMNS)
    w.writerows(rows)
    try:
        atomic_write_text(out, buf.getvalue())
    except OSError as e:
        raise DataError(out, f"--out: cannot be written ({e.strerror or e})") from None
    return Path(out)

"""Scoring folders of captures into a predictions CSV, with metrics when the folders are class folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mfas.conventions import MODALITIES
from mfas.errors import ConfigError, DataError, MfasError
from mfas.inference.predictor import Predictor


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

    from mfas.fs import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(PREDICTION_COLUMNS)
    w.writerows(rows)
    try:
        atomic_write_text(out, buf.getvalue())
    except OSError as e:
        raise DataError(out, f"--out: cannot be written ({e.strerror or e})") from None
    return Path(out)

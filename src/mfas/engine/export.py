"""``mfas export RUN --format onnx [--int8]``: the bundle's model as an ONNX graph beside its weights.

The graph is the model's :meth:`~mfas.models.base.PadModel.export_view`: inputs ``rgb`` (N, 3, H, W), ``depth``
and ``ir`` (N, 1, H, W) float32 after the bundle's preprocessing, ``present`` (N, 3) bool; output ``score`` (N,)
P(bona fide); the batch axis is dynamic. It is traced with torch's dynamo exporter, checked against torch on
inputs with every presence pattern the model accepts (refused above :data:`PARITY_TOL`), and recorded in
``model.json`` under ``onnx`` with its SHA-256 and the weights it was made from. ``--int8`` adds a dynamically
quantised copy (int8 weights of the matrix products, activations quantised per batch at run time) whose score
change is measured and recorded, not bounded: int8 is an accuracy trade to be judged on one's own data.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from mfas.conventions import MODALITIES, MODALITY_CHANNELS
from mfas.errors import ConfigError, MfasError
from mfas.fs import atomic_write_json, first_line, replace_atomically, sha256_file
from mfas.inference.bundle import bundle_paths
from mfas.inference.torch_model import load_bundle

#: largest |score difference| accepted between the fp32 graph and torch
PARITY_TOL = 1e-4
#: ONNX operator set of the exported graphs
OPSET = 18
#: the most samples a graph is checked to take in one batch (the dynamic axis' upper bound)
MAX_BATCH = 1024
FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}


def probe_inputs(model, n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of ``n`` normalised-scale random captures for checking a graph: every modality present in the
    first, then (models that support missing modalities) each used modality absent in turn."""
    g = torch.Generator().manual_seed(seed)
    h, w = model.input_size
    x = {m: torch.randn(n, MODALITY_CHANNELS[m], h, w, generator=g) for m in MODALITIES}
    present = torch.tensor([[m in model.modalities for m in MODALITIES]] * n)
    if model.supports_missing:
        used = [MODALITIES.index(m) for m in model.modalities]
        for k in range(1, n):
            if len(used) > 1:
                present[k, used[(k - 1) % len(used)]] = False
    for i, m in enumerate(MODALITIES):
        x[m] = x[m] * present[:, i, None, None, None]
    return {**x, "present": present}


@contextlib.contextmanager
def _quiet():
    """The exporter and the quantiser print progress and advice on stdout, warnings and the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _export_fp32(view: torch.nn.Module, example: dict[str, torch.Tensor], dst: Path, opset: int) -> list[str]:
    """Trace ``view`` to ``dst`` (atomically); the names of the graph's inputs."""
    import onnx
    from torch.export import Dim

    batch = Dim("batch", min=1, max=MAX_BATCH)
    args = tuple(example[k] for k in (*MODALITIES, "present"))
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        with _quiet():
            torch.onnx.export(view, args, str(tmp), dynamo=True, opset_version=opset,
                              input_names=[*MODALITIES, "present"], output_names=["score"],
                              dynamic_shapes={k: {0: batch} for k in (*MODALITIES, "present")},
                              external_data=False)
        graph = onnx.load(str(tmp), load_external_data=False)
        names = [i.name for i in graph.graph.input]
        replace_atomically(tmp, dst)
    except MfasError:
        raise
    except Exception as e:  # the exporter's own errors are many types
        raise ConfigError(f"the model could not be exported to ONNX ({type(e).__name__}: {first_line(e)})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return names


def _quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}.onnx")
    try:
        with _quiet():
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        replace_atomically(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _ort_scores(path: Path, batch: dict[str, torch.Tensor]) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {i.name: batch[i.name].numpy() for i in sess.get_inputs()}
    return np.asarray(sess.run(["score"], feed)[0], np.float32).reshape(-1)


def export_onnx(run: str | Path, int8: bool = False, opset: int = OPSET) -> dict:
    """Export ``run``'s bundle to ONNX (and int8 with ``int8``), check it, record it in ``model.json``; returns
    the ``onnx`` record."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as e:
        raise ConfigError(f"export needs onnx, onnxscript and onnxruntime ({e.name} is not installed; pip install "
                          "'mfas[train]')") from None
    mj, _ = bundle_paths(run)
    model, meta = load_bundle(run)
    view = model.export_view().eval()
    probe = probe_inputs(model)
    with torch.no_grad():
        want = view(*(probe[k] for k in (*MODALITIES, "present"))).float().numpy()
        want1 = view(*(probe[k][:1] for k in (*MODALITIES, "present"))).float().numpy()
    d = mj.parent
    inputs = _export_fp32(view, probe, d / FILES["fp32"], opset)
    got = _ort_scores(d / FILES["fp32"], probe)
    got1 = _ort_scores(d / FILES["fp32"], {k: v[:1] for k, v in probe.items()})
    diff = float(max(np.abs(got - want).max(), np.abs(got1 - want1).max()))
    if not diff <= PARITY_TOL:
        (d / FILES["fp32"]).unlink(missing_ok=True)
        raise MfasError(f"the ONNX graph of {meta['model']['name']!r} differs from torch by {diff:.2e} in score "
                        f"(more than {PARITY_TOL:g}); not recorded")
    record = {"opset": opset, "inputs": inputs, "output": "score", "batch": [1, MAX_BATCH],
              "weights_sha256": meta["weights_sha256"], "torch": torch.__version__,
              "onnxruntime": onnxruntime.__version__,
              "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "fp32": {"file": FILES["fp32"], "sha256": sha256_file(d / FILES["fp32"]), "parity_max_abs": diff}}
    if int8:
        _quantize_int8(d / FILES["fp32"], d / FILES["int8"])
        q = _ort_scores(d / FILES["int8"], probe)
        record["int8"] = {"file": FILES["int8"], "sha256": sha256_file(d / FILES["int8"]),
                          "parity_max_abs": float(np.abs(q - want).max()),
                          "quantization": "dynamic: int8 weights of MatMul and Gemm, uint8 activations per batch"}
    else:
        (d / FILES["int8"]).unlink(missing_ok=True)  # an old int8 file would not match the new graph
    doc = json.loads(mj.read_text(encoding="utf-8"))
    doc["onnx"] = record
    atomic_write_json(mj, doc)
    return record

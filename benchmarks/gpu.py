"""GPU figures for the two seed systems, in bf16 autocast (``python benchmarks/gpu.py``).

Measured on one CUDA device:

- ``matmul``: the bf16 matrix-product peak (8192^3), the yardstick for the fractions below.
- ``mmfas``: full-size mmFAS training samples/s at the paper's batch of 128 (AdamW, fused), inference
  latency at batch 1 and throughput at batch 128.
- ``mmda``: full-size MMDA (CLIP ViT-B/16 + adapters, random weights) training samples/s at the
  released recipe's micro-batch 3 x 8 accumulation and at micro-batch 24 x 3 (the same effective
  72), for each ``compat`` mode, and in official mode also along the released compute path (text tower
  re-encoded over 77 positions in every micro-batch, one image pass per modality); batch-1 inference latency
  with and without the text-feature cache.

FLOPs are counted by torch's FlopCounterMode (matmuls, convolutions and attention), forward +
backward for training. Writes ``gpu-<stamp>.json`` and ``.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import _flatten, _flops, _mm_batch, use_path


def _to(x: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in x.items()}


def _cuda_timed(fn: Callable[[], object], reps: int) -> list[float]:
    """Seconds per call, each call synchronised, after the caller has warmed up."""
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times


def matmul_bf16(device: torch.device, n: int = 8192, reps: int = 10) -> dict:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    dt = float(np.median(_cuda_timed(lambda: a @ b, reps)))
    return {"n": n, "tflops": 2 * n**3 / dt / 1e12}


def _train(model, batches: list[dict], accum: int, steps: int, device: torch.device) -> dict:
    """Optimiser steps of ``accum`` micro-batches each under bf16 autocast, each micro-batch told where the step
    begins and ends, as the engine does (MMDA then runs its text tower once per step); median seconds per optimiser
    step after two warm-up steps, samples/s, FLOPs of a whole step and peak memory."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)
    model.train()

    def micro(x: dict) -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model.losses(x, model(x))["loss"] / accum
        loss.backward()

    def step() -> None:
        for i in range(accum):
            model.accumulation_phase(i == 0, i == accum - 1)
            micro(batches[i % len(batches)])
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    flops_step = _flops(step)
    torch.cuda.reset_peak_memory_stats(device)
    dt = float(np.median(_cuda_timed(step, steps)))
    per_step = sum(len(b["label"]) for b in (batches[i % len(batches)] for i in range(accum)))
    return {"micro_batch": len(batches[0]["label"]), "accumulation": accum, "samples_per_step": per_step,
            "step_s": dt, "samples_per_s": per_step / dt, "tflops": flops_step / dt / 1e12,
            "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30}


def _infer(model, x: dict, reps: int, before: Callable[[], None] = lambda: None) -> dict:
    model.eval()

    def call() -> None:
        before()
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            model(x)

    for _ in range(5):
        call()
    flops = _flops(call)
    times = _cuda_timed(call, reps)
    med, b = float(np.median(times)), len(x["label"])
    return {"batch": b, "latency_ms_median": 1e3 * med, "latency_ms_p90": 1e3 * float(np.percentile(times, 90)),
            "samples_per_s": b / med, "tflops": flops / med / 1e12}


def _domains(b: int) -> list[str]:
    return [("A", "B", "C")[i * 3 // b] for i in range(b)] if b >= 6 else (["A", "A", "B"] * b)[:b]


def bench_mmfas(device: torch.device, steps: int, reps: int) -> dict:
    from mfas.models import create_model

    torch.manual_seed(0)
    model = create_model("mmfas").to(device)
    out = {"train_b128": _train(model, [_to(_mm_batch(128), device)], 1, steps, device)}
    out["infer_b1"] = _infer(model, _to(_mm_batch(1), device), reps)
    out["infer_b128"] = _infer(model, _to(_mm_batch(128), device), max(5, reps // 4))
    return out


def bench_mmda(device: torch.device, steps: int, reps: int) -> dict:
    from mfas.models import create_model

    out: dict = {}
    for compat in ("clean", "official"):
        torch.manual_seed(0)
        model = create_model("mmda", compat=compat).to(device)
        for mb, accum in ((3, 8), (24, 3)):
            xs = []
            for k in range(min(accum, 3)):
                x = _to(_mm_batch(mb), device)
                x["domain"] = _domains(mb)
                x["label"] = (torch.arange(mb, device=device) + k) % 2
                xs.append(x)
            out[f"{compat}_train_mb{mb}x{accum}"] = _train(model, xs, accum, steps, device)
            if compat == "official":  # the released compute path on the same weights, for the speed-up
                use_path(model, "released")
                out[f"official_released_path_mb{mb}x{accum}"] = _train(model, xs, accum, steps, device)
                use_path(model, "mfas")
        if compat == "clean":
            x1 = _to(_mm_batch(1), device)
            out["infer_b1"] = _infer(model, x1, reps)

            def drop(m=model) -> None:
                m._text_cache = m._levels_cache = None

            out["infer_b1_no_text_cache"] = _infer(model, x1, reps, before=drop)
            model._text_cache = model._levels_cache = None
        del model
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="matmul,mmfas,mmda", help="comma-separated subset of matmul, mmfas, mmda")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for the JSON and table")
    p.add_argument("--steps", type=int, default=10, help="timed optimiser steps per training figure")
    p.add_argument("--reps", type=int, default=50, help="timed calls per inference figure")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("no CUDA device: this benchmark measures GPU figures; benchmarks/run.py measures the CPU")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    res: dict = {"machine": {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__,
                             "cuda": torch.version.cuda},
                 "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "benchmarks": {}}
    names = [n for n in args.only.split(",") if n]
    fns = {"matmul": lambda: matmul_bf16(device), "mmfas": lambda: bench_mmfas(device, args.steps, args.reps),
           "mmda": lambda: bench_mmda(device, args.steps, args.reps)}
    for n in names:
        if n not in fns:
            p.error(f"unknown benchmark {n!r}; choose from {', '.join(fns)}")
        print(f"running {n} ...", flush=True)
        res["benchmarks"][n] = fns[n]()
        print(json.dumps(res["benchmarks"][n], indent=1), flush=True)
    peak = res["benchmarks"].get("matmul", {}).get("tflops")
    if peak:
        for name in ("mmfas", "mmda"):
            for fig in res["benchmarks"].get(name, {}).values():
                fig["fraction_of_bf16_peak"] = fig["tflops"] / peak
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"gpu-{stamp}.json").write_text(json.dumps(res, indent=2))
    lines = [f"GPU: {res['machine']['gpu']}, torch {res['machine']['torch']}, bf16 autocast", "",
             "| benchmark | figure | value |", "|---|---|---|"]
    for name, r in res["benchmarks"].items():
        for k, v in _flatten(r):
            lines.append(f"| {name} | {k} | {v:.4g} |" if isinstance(v, float) else f"| {name} | {k} | {v} |")
    (args.out / f"gpu-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

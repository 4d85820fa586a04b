"""mfas benchmark harness: one command, a JSON file and a readable table.

    python benchmarks/run.py                 # every benchmark
    python benchmarks/run.py --only matmul   # a subset (comma separated)

Figures depend on the machine; the JSON records it (CPU, cores, torch, numpy) so that numbers
are compared only with numbers from the same machine, or as ratios such as the fraction of the
measured matmul peak.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

BENCHMARKS: dict[str, Callable[[argparse.Namespace], dict]] = {}


def bench(name: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        BENCHMARKS[name] = fn
        return fn

    return deco


def machine() -> dict:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "cuda": torch.cuda.is_available()}


def _matmul_now(seconds: float = 1.0, n: int = 2048) -> float:
    """GFLOP/s of the best float32 n x n product over ``seconds``: how fast the machine is right now."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


@bench("matmul")
def matmul_peak(args: argparse.Namespace) -> dict:
    """float32 matmul throughput with all torch threads: the machine's practical compute peak."""
    import torch

    out = {}
    for n in (1024, 2048, 4096):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        reps, best = 0, float("inf")
        t_end = time.perf_counter() + args.seconds
        while time.perf_counter() < t_end or reps < 3:
            t = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t)
            reps += 1
        out[f"gflops_n{n}"] = 2 * n**3 / best / 1e9
    out["peak_gflops"] = max(out.values())
    return out


@bench("store_read")
def store_read(args: argparse.Namespace) -> dict:
    """Reading a 224x224 RGB + depth + IR store through StoreDataset in one process (no workers)."""
    import torch
    from torch.utils.data import DataLoader

    from mfas.data import Sample, StoreDataset, StoreWriter, open_store

    n = args.store_samples
    tmp = Path(tempfile.mkdtemp(prefix="mfas-bench-"))
    try:
        rng = np.random.default_rng(0)
        pool = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(8)]
        with StoreWriter(tmp / "st", size=(224, 224)) as w:
            for i in range(n):
                w.add(Sample(f"b{i}", i % 2, "bonafide" if i % 2 else "print", "bench",
                             images={"rgb": pool[i % 8], "depth": pool[(i + 1) % 8][..., 0],
                                     "ir": pool[(i + 2) % 8][..., 1]}))
        ds = StoreDataset(open_store(tmp / "st"))
        order = np.random.default_rng(1).permutation(n)  # random access, as a shuffled epoch reads
        t = time.perf_counter()
        for i in order:
            ds[int(i)]
        per_item = n / (time.perf_counter() - t)
        loader = DataLoader(ds, batch_size=64, shuffle=True, num_workers=0,
                            generator=torch.Generator().manual_seed(0))
        t = time.perf_counter()
        seen = sum(b["label"].numel() for b in loader)
        batched = seen / (time.perf_counter() - t)
        mb = sum(f.stat().st_size for f in (tmp / "st").glob("*.npy")) / 2**20
        return {"samples": n, "store_mb": mb, "samples_per_s_getitem": per_item,
                "samples_per_s_dataloader_b64": batched,
                "note": "random order, page cache warm (the store was just written)"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@bench("simfas")
def simfas_rate(args: argparse.Namespace) -> dict:
    """SimFAS generation of 2,000 samples of 112x112 (four domains) into a store."""
    from mfas.data.synth import generate_store

    tmp = Path(tempfile.mkdtemp(prefix="mfas-bench-"))
    try:
        out = {}
        for workers in sorted({1, os.cpu_count() or 1}):
            per_domain = args.sim_samples // 4
            t = time.perf_counter()
            generate_store(tmp / f"w{workers}", per_domain=per_domain, size=112, seed=0, workers=workers)
            dt = time.perf_counter() - t
            out[f"workers_{workers}"] = {"samples": 4 * per_domain, "seconds": dt, "samples_per_s": 4 * per_domain / dt}
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _train_worker(mode: str, store: str, steps: int, warm: int, batch: int, size: int, queue, name: str) -> None:
    """One training measurement in a fresh process, so that peak memory is this mode's alone."""
    import torch

    from mfas.engine.config import validate_config

    torch.manual_seed(0)
    cfg = validate_config({
        "name": name, "seed": 0, "protocol": "sim/loo/CPS-W", "output_dir": str(Path(store).parent / "runs"),
        "data": {"stores": {"sim": store}, "image_size": size, "batch_size": batch, "sampler": "random",
                 "batches_per_epoch": steps + warm + 10, "augment": True},
        "model": {"name": "vit-concat-tiny", "img_size": size},
        "optim": {"lr": 3e-4, "schedule": "constant", "warmup": 0.0},
        "trainer": {"max_steps": steps + warm, "max_epochs": 1, "accelerator": "cpu", "progress": False},
        "eval": {"every_n_epochs": 1000},
    })
    if mode == "bare":
        res = _bare_loop(cfg, steps, warm)
    else:
        res = _engine_loop(cfg, steps, warm)
    res["peak_rss_mb"] = _peak_rss_mb()
    queue.put(res)


def _bare_loop(cfg, steps: int, warm: int) -> dict:
    """Plain PyTorch: StoreDataset + the same transforms, a shuffled DataLoader, AdamW."""
    import torch
    from torch.utils.data import ConcatDataset, DataLoader, Dataset

    from mfas.data import StoreDataset
    from mfas.data.transforms import train_transform
    from mfas.models import create_model
    from mfas.protocols import StoreSet, get_protocol, resolve

    model = create_model(cfg.model.name, **cfg.model.overrides)
    norm = {m: (tuple(v["mean"]), tuple(v["std"])) if isinstance(v, dict) else v
            for m, v in model.norm_stats.items()}
    tf = train_transform((cfg.data.image_size,) * 2, norm)
    stores = StoreSet({k: Path(v) for k, v in cfg.data.stores.items()})
    parts = []
    for ref in get_protocol(cfg.protocol).train:
        st, idx = resolve(ref, stores)
        parts.append(StoreDataset(st, idx))

    class Aug(Dataset):
        def __init__(self, base):
            self.base, self.g = base, torch.Generator().manual_seed(0)

        def __len__(self):
            return len(self.base)

        def __getitem__(self, k):
            return tf(self.base[k], self.g)

    loader = DataLoader(Aug(ConcatDataset(parts)), batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    model.train()
    done, t0 = 0, None
    while done < steps + warm:
        for batch in loader:
            if done == warm:
                t0 = time.perf_counter()
            loss = model.losses(batch, model(batch))["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps + warm:
                break
    dt = time.perf_counter() - t0
    return {"steps": steps, "samples_per_s": steps * cfg.data.batch_size / dt, "seconds": dt,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def _engine_loop(cfg, steps: int, warm: int) -> dict:
    """The real engine: PadDataModule (seeded augmentation, batch sampler) + PadModule + Lightning, CSV and
    TensorBoard logging on, progress bar off."""
    from lightning.pytorch.callbacks import Callback

    from mfas.engine.train import train

    times: dict[str, float] = {}

    class Clock(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == warm and "t0" not in times:
                times["t0"] = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            times["t1"] = time.perf_counter()

    import mfas.engine.train as tr

    orig = tr.make_trainer

    def with_clock(*a, callbacks=None, **k):
        return orig(*a, callbacks=list(callbacks or []) + [Clock()], **k)

    tr.make_trainer = with_clock
    t = time.perf_counter()
    train(cfg)
    total = time.perf_counter() - t
    dt = times["t1"] - times["t0"]
    return {"steps": steps, "samples_per_s": steps * cfg.data.batch_size / dt, "seconds": dt,
            "train_call_seconds_incl_setup_and_scoring": total}


@bench("train")
def train_rate(args: argparse.Namespace) -> dict:
    """vit-concat-tiny training on CPU (112x112, batch 32): samples/s and peak memory for the engine and for a
    bare PyTorch loop on the same model and data; the ratio is the engine's overhead."""
    import multiprocessing as mp

    from mfas.data.synth import generate_store

    tmp = Path(tempfile.mkdtemp(prefix="mfas-bench-"))
    try:
        generate_store(tmp / "sim", per_domain=150, size=112, seed=0)
        ctx = mp.get_context("spawn")
        out: dict = {"batch": 32, "image_size": 112, "timed_steps": args.train_steps, "warmup_steps": 5}
        for rep in range(args.train_repeats):
            for mode in ("bare", "engine"):
                q = ctx.Queue()
                p = ctx.Process(target=_train_worker,
                                args=(mode, str(tmp / "sim"), args.train_steps, 5, 32, 112, q, f"{mode}{rep}"))
                p.start()
                res = None
                while res is None:
                    try:
                        res = q.get(timeout=5)
                    except queue.Empty:
                        if not p.is_alive():
                            raise RuntimeError(f"{mode} training worker died (exit code {p.exitcode})") from None
                p.join()
                best = out.get(mode)
                if best is None or res["samples_per_s"] > best["samples_per_s"]:
                    out[mode] = res
        out["engine_overhead_ratio"] = out["bare"]["samples_per_s"] / out["engine"]["samples_per_s"]
        out["note"] = (f"best of {args.train_repeats} runs per mode, each in a fresh process; steady state after "
                       "5 warm-up steps; ratio = bare samples/s / engine samples/s (target <= 1.15)")
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cefa_fixture(root: Path, videos: int, h: int, w: int) -> int:
    """A CeFA-layout tree of ``videos`` videos x 3 frames x 3 modalities: noisy JPEG faces of ``h`` x ``w``
    inside a black frame, as the CeFA crops come. Returns the number of frames."""
    import cv2

    rng = np.random.default_rng(0)
    n = 0
    for v in range(videos):
        race = ("AF", "CA", "EA")[v % 3]
        vd = root / "CeFA-Race" / race / f"{race}-{v:03d}" / f"{v % 3 + 1}_{v:03d}_1_1_{1 + v % 2}"
        for m, ch in (("profile", 3), ("depth", 1), ("ir", 1)):
            (vd / m).mkdir(parents=True)
            for f in (26, 51, 76):
                img = np.zeros((h, w, ch), np.uint8)
                img[h // 10:-h // 10, w // 10:-w // 10] = rng.integers(40, 220, (h - 2 * (h // 10),
                                                                           w - 2 * (w // 10), ch), dtype=np.uint8)
                cv2.imwrite(str(vd / m / f"{f:04d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        n += 3
    return n


@bench("prepare")
def prepare_rate(args: argparse.Namespace) -> dict:
    """``mfas data prepare cefa`` on a CeFA-layout fixture at realistic crop sizes (RGB, depth, IR JPEGs
    of 480 x 360 with a black frame), into a 224 x 224 store: samples/s for each worker count."""
    from mfas.data.prepare import prepare

    tmp = Path(tempfile.mkdtemp(prefix="mfas-bench-prepare-"))
    try:
        frames = _cefa_fixture(tmp / "raw", args.prepare_videos, 480, 360)
        out: dict = {"samples": frames, "image": "480x360 JPEG x 3 modalities -> 224x224", "by_workers": {}}
        for k in (int(x) for x in args.prepare_workers.split(",")):
            t = time.perf_counter()
            rep = prepare("cefa", tmp / "raw", tmp / f"store{k}", size=224, workers=k, frames="all", split="train")
            dt = time.perf_counter() - t
            out["by_workers"][str(k)] = {"seconds": dt, "samples_per_s": rep.build.written / dt}
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` as torch's FlopCounterMode counts them (matmuls, convolutions, attention).

    Two gaps of the counter on the CPU are closed here: nn.MultiheadAttention's inference fast path is one fused
    op the counter has no formula for (it counted 0 for the projections and the attention), so it is switched
    off while counting (the same matmuls then run as separate ops); and the CPU flash-attention kernels behind
    ``scaled_dot_product_attention`` get the formulas torch gives the GPU ones."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def fwd(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    def bwd(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, query, key, value)

    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: fwd,
               aten._scaled_dot_product_flash_attention_for_cpu_backward: bwd}
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return counter.get_total_flops()


def _mm_batch(b: int, size: int = 224) -> dict:
    import torch

    g = torch.Generator().manual_seed(0)
    return {"rgb": torch.randn(b, 3, size, size, generator=g), "depth": torch.randn(b, 1, size, size, generator=g),
            "ir": torch.randn(b, 1, size, size, generator=g), "present": torch.ones(b, 3, dtype=torch.bool),
            "label": torch.arange(b) % 2, "domain": ["A"] * b}


def _train_figures(model, x: dict, opt, steps: int) -> dict:
    """Median seconds per optimiser step on batch ``x`` (after one warm-up step), samples/s, FLOPs per step
    (forward + backward, as FlopCounterMode counts them) and achieved GFLOP/s."""
    def step() -> None:
        loss = model.losses(x, model(x))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    flops = _flops(lambda: model.losses(x, model(x))["loss"].backward())
    opt.zero_grad(set_to_none=True)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    dt = float(np.median(times))
    b = len(x["label"])
    return {"samples_per_s": b / dt, "step_s": dt, "gflop_per_step": flops / 1e9, "gflops": flops / dt / 1e9}


@bench("mmfas")
def mmfas_rate(args: argparse.Namespace) -> dict:
    """Full-size mmFAS (15.6M parameters, 224x224, three modalities): training samples/s (batch 8, AdamW) and
    inference latency per sample at batch 1, with achieved GFLOP/s as a fraction of the matmul peak."""
    import torch

    from mfas.models import create_model

    torch.manual_seed(0)
    model = create_model("mmfas")
    out: dict = {"params_m": sum(p.numel() for p in model.parameters()) / 1e6, "threads": torch.get_num_threads()}
    # training
    b, steps = 8, args.mmfas_steps
    x = _mm_batch(b)
    model.train()
    out["train"] = {"batch": b, **_train_figures(model, x, torch.optim.AdamW(model.parameters(), lr=1e-4), steps)}
    # inference, batch 1
    model.eval()
    x1 = _mm_batch(1)
    with torch.inference_mode():
        for _ in range(3):
            model(x1)
        flops_1 = _flops(lambda: model(x1))
        times = []
        for _ in range(args.mmfas_reps):
            t = time.perf_counter()
            model(x1)
            times.append(time.perf_counter() - t)
    med = float(np.median(times))
    out["infer_b1"] = {"latency_ms_median": 1e3 * med, "latency_ms_p90": 1e3 * float(np.percentile(times, 90)),
                       "gflop_per_sample": flops_1 / 1e9, "gflops": flops_1 / med / 1e9}
    return out


def _released_towers(model) -> None:
    """The image side as released: open_clip's whole image tower, one pass per modality."""
    import torch

    model.encode_all = lambda batch: torch.stack([model.clip.encode_image(model._image(batch, m))
                                                  for m in ("rgb", "depth", "ir")], dim=1)


def use_path(model, path: str) -> None:
    """Switch a built MMDA, weights unchanged, between the ``released`` compute path (open_clip's image tower, one
    pass per modality; the prompts over 77 positions re-encoded in every micro-batch) and ``mfas``'s (one pass for
    the three modalities with the last block for the class token only; the prompts over the longest prompt's
    positions, once per optimiser step; in training one MoE call per U-DSA level and one for the classifier over the
    visual rows and both prompt sets, instead of one per set)."""
    import open_clip

    from mfas.models.mmda.rs2 import LIVE_PROMPTS, SPOOF_PROMPTS

    if not hasattr(model, "_trimmed_tokens"):
        model._trimmed_tokens = (model.spoof_tokens, model.live_tokens)
    if path == "released":
        _released_towers(model)
        ctx = model.clip.positional_embedding.shape[0]
        dev = model.spoof_tokens.device
        model.spoof_tokens = open_clip.tokenize(list(SPOOF_PROMPTS), ctx).to(dev)
        model.live_tokens = open_clip.tokenize(list(LIVE_PROMPTS), ctx).to(dev)
        model.text_grad = "micro_batch"
    else:
        model.__dict__.pop("encode_all", None)
        model.spoof_tokens, model.live_tokens = model._trimmed_tokens
        model.text_grad = "step"
    model.group_moe = model.udsa.group_moe = path != "released"


def _adamw_step(model, micro: list[dict], opt, phases: bool) -> None:
    """One optimiser step over ``micro`` (accumulated, each loss / len(micro)), as the engine runs it."""
    k = len(micro)
    for i, mb in enumerate(micro):
        if phases:
            model.accumulation_phase(i == 0, i == k - 1)
        (model.losses(mb, model(mb))["loss"] / k).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


@bench("mmda")
def mmda_rate(args: argparse.Namespace) -> dict:
    """Full-size MMDA (CLIP ViT-B/16 + adapters, 301M parameters, random weights, 224x224).

    Inference at batch 1 (clean mode): as mfas runs it (one image-tower pass for the three modalities, prompt
    embeddings and the prompt side of U-DSA cached) and as it ran before (one pass per modality, only the prompt
    embeddings cached), and without any cache. Training at the released recipe (``compat: official``, full
    fine-tuning, micro-batch 3, ``--mmda-accum`` micro-batches per AdamW step): the released path (text tower
    re-encoded over 77 positions in every micro-batch, one image pass per modality, foreach AdamW) and mfas's (text
    tower once per step over the longest prompt, one image pass, fused AdamW). Each with FLOPs and GFLOP/s. Each
    training path runs in a process of its own (``--mmda-train-paths``): by default the released path under glibc's
    own allocator thresholds, as training ran before ``trainer.cpu_allocator``, and mfas's under ``keep``."""
    import torch

    from mfas.models import create_model

    torch.manual_seed(0)
    model = create_model(args.mmda_model)
    size = model.input_size[0]
    out: dict = {"params_m": sum(p.numel() for p in model.parameters()) / 1e6, "threads": torch.get_num_threads()}
    model.eval()
    x1 = _mm_batch(1, size)

    def timed(fn: Callable[[], object], reps: int) -> list[float]:
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return times

    def infer_path(path: str) -> None:
        if path == "before":  # open_clip's tower once per modality; only the prompt embeddings cached
            _released_towers(model)
            model.text_levels = lambda spoof, live: None
        else:
            model.__dict__.pop("encode_all", None)
            model.__dict__.pop("text_levels", None)

    matmul_before = _matmul_now()
    with torch.inference_mode():
        # the two paths alternate call by call, so that a machine whose speed drifts (shared cores) drifts
        # under both alike; FLOPs as counted for each
        times: dict[str, list[float]] = {"after": [], "before": []}
        flops: dict[str, int] = {}
        for path in times:
            infer_path(path)
            model(x1)  # fills the caches
            flops[path] = _flops(lambda: model(x1))
        for _ in range(args.mmda_reps):
            for path, ts in times.items():
                infer_path(path)
                ts.extend(timed(lambda: model(x1), 1))
        infer_path("after")
        for path, key in (("after", "infer_b1"), ("before", "infer_b1_before")):
            med = float(np.median(times[path]))
            out[key] = {"latency_ms_median": 1e3 * med, "latency_ms_p90": 1e3 * float(np.percentile(times[path], 90)),
                        "gflop_per_sample": flops[path] / 1e9, "gflops": flops[path] / med / 1e9}

        def uncached() -> None:
            model._text_cache = model._levels_cache = None
            model(x1)

        fresh = timed(uncached, 3)
        model._text_cache = model._levels_cache = None
        flops_fresh = _flops(lambda: model(x1))
    med_fresh = float(np.median(fresh))
    out["infer_b1"]["speedup_over_before"] = (out["infer_b1_before"]["latency_ms_median"]
                                              / out["infer_b1"]["latency_ms_median"])
    out["no_cache"] = {"latency_ms": 1e3 * med_fresh, "gflop": flops_fresh / 1e9,
                       "cache_speedup": 1e3 * med_fresh / out["infer_b1"]["latency_ms_median"]}
    # training at the released recipe: each path in its own process, so that each has its own C allocator
    model = None  # the inference model's memory is freed before the workers start
    out["matmul_gflops_n2048_before_after"] = [matmul_before]
    out["train_recipe"] = _mmda_train(args)
    out["matmul_gflops_n2048_before_after"].append(_matmul_now())
    return out


def _mmda_micro_batches(k: int, b: int, size: int) -> list[dict]:
    import torch

    micro = []
    for i in range(k):
        mb = _mm_batch(b, size)
        g = torch.Generator().manual_seed(100 + i)
        for m in ("rgb", "depth", "ir"):
            mb[m] = torch.randn(mb[m].shape, generator=g)
        mb["domain"] = ["A", "A", "B"]
        micro.append(mb)
    return micro


def _mmda_train_worker(conn, model_name: str, path: str, allocator: str, k: int, threads: int) -> None:
    """One training path in a process of its own: builds MMDA (seed 0, ``compat: official``), takes one warm-up
    micro-batch, counts a step's FLOPs, then times one optimiser step per ``"step"`` it receives."""
    import torch

    from mfas.engine.allocator import apply_allocator
    from mfas.models import create_model

    torch.set_num_threads(threads)
    kept = apply_allocator(allocator)
    torch.manual_seed(0)
    model = create_model(model_name, compat="official").train()
    micro = _mmda_micro_batches(k, 3, model.input_size[0])
    use_path(model, path)
    released = path == "released"
    opt = torch.optim.AdamW(model.param_groups(5e-5), lr=5e-6, weight_decay=5e-5,
                            **({"foreach": True} if released else {"fused": True}))
    _adamw_step(model, micro[:1], opt, phases=not released)  # warm-up: one micro-batch
    if released:  # the micro-batches are alike: one counted, times k
        flops = k * _flops(lambda: (model.losses(micro[0], model(micro[0]))["loss"] / k).backward())
        opt.zero_grad(set_to_none=True)
    else:
        flops = _flops(lambda: _adamw_step(model, micro, opt, phases=True))
    conn.send({"flops": flops, "keeps_freed_memory": kept})
    while conn.recv() == "step":
        t = time.perf_counter()
        _adamw_step(model, micro, opt, phases=not released)
        conn.send(time.perf_counter() - t)
    conn.send(_peak_rss_mb())


def _mmda_train(args: argparse.Namespace) -> dict:
    """Seconds per optimiser step of each ``--mmda-train-paths`` entry (``path:allocator``), each path in a worker
    process of its own; the workers' steps alternate, so that a machine whose speed drifts drifts under all alike."""
    import multiprocessing as mp

    import torch

    b, k = 3, args.mmda_accum
    specs = [tuple(s.split(":")) for s in args.mmda_train_paths.split(",") if s]
    if not specs or any(len(s) != 2 or s[0] not in ("released", "mfas") or s[1] not in ("keep", "system")
                        for s in specs):
        raise SystemExit(f"--mmda-train-paths: path:allocator entries (released|mfas : keep|system), got "
                         f"{args.mmda_train_paths!r}")
    ctx = mp.get_context("spawn")
    train: dict = {"micro_batch": b, "accumulation": k, "samples_per_step": b * k}
    workers = []
    try:
        for path, allocator in specs:
            here, there = ctx.Pipe()
            proc = ctx.Process(target=_mmda_train_worker, daemon=True,
                               args=(there, args.mmda_model, path, allocator, k, torch.get_num_threads()))
            proc.start()
            workers.append((f"{path}_{allocator}", here, proc))
            train[f"{path}_{allocator}"] = {"path": path, "cpu_allocator": allocator, **here.recv()}
        times: dict[str, list[float]] = {name: [] for name, _, _ in workers}
        for _ in range(args.mmda_steps):
            for name, conn, _ in workers:
                conn.send("step")
                times[name].append(conn.recv())
        for name, conn, proc in workers:
            conn.send("stop")
            dt = float(np.median(times[name]))
            fl = train[name].pop("flops")
            train[name].update({"step_s": dt, "steps_timed": len(times[name]), "samples_per_s": b * k / dt,
                                "gflop_per_step": fl / 1e9, "gflops": fl / dt / 1e9, "peak_rss_mb": conn.recv()})
            proc.join(timeout=60)
    finally:
        for _, _, proc in workers:
            if proc.is_alive():
                proc.kill()
    first = workers[0][0]
    for name, _, _ in workers[1:]:
        train[name][f"speedup_over_{first}"] = train[name]["samples_per_s"] / train[first]["samples_per_s"]
    return train


def _timed_ms(fn: Callable[[], object], reps: int, warm: int = 3) -> dict:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"ms_median": 1e3 * float(np.median(times)), "ms_p90": 1e3 * float(np.percentile(times, 90))}


@bench("latency")
def latency(args: argparse.Namespace) -> dict:
    """Batch-1 latency of full-size models (random weights, their default input size, every modality they take)
    through the inference backends: torch, ONNX fp32 and ONNX int8 (onnxruntime, dynamic int8 MatMul/Gemm). Timed on one
    prepared capture (the model call; decoding and detection excluded) and end to end from a 224x224 uint8
    capture (preprocessing + model, no detection). Ratios are to torch in the same run."""
    import torch

    from mfas.engine.export import export_onnx
    from mfas.engine.io import save_bundle
    from mfas.inference.predictor import Predictor
    from mfas.models import create_model

    out: dict = {"torch_threads": torch.get_num_threads(),
                 "ort_threads": int(os.environ.get("MFAS_ORT_THREADS", 0) or 0) or "onnxruntime default"}
    rng = np.random.default_rng(0)
    for name in [n for n in args.latency_models.split(",") if n]:
        tmp = Path(tempfile.mkdtemp(prefix="mfas-bench-"))
        try:
            torch.manual_seed(0)
            model = create_model(name).eval()
            mods, params = model.modalities, sum(p.numel() for p in model.parameters()) / 1e6
            size = "x".join(map(str, model.input_size))
            save_bundle(tmp, model, {"threshold": {"value": 0.5, "policy": "fixed:0.5"}})
            del model
            t = time.perf_counter()
            record = export_onnx(tmp, int8=True)
            res: dict = {"input_size": size, "params_m": params, "export_s": time.perf_counter() - t,
                         "onnx_mb": (tmp / record["fp32"]["file"]).stat().st_size / 2**20,
                         "int8_mb": (tmp / record["int8"]["file"]).stat().st_size / 2**20,
                         "int8_parity_max_abs": record["int8"]["parity_max_abs"]}
            h = w = 224
            cap = {m: rng.integers(0, 256, (h, w, 3) if m == "rgb" else (h, w), dtype=np.uint8) for m in mods}
            for backend in ("torch", "onnx", "onnx-int8"):
                p = Predictor(tmp, backend=backend)
                item = p.inputs(cap)
                res[backend] = {"model": _timed_ms(lambda p=p, item=item: p.score_inputs([item]), args.latency_reps),
                                "end_to_end": _timed_ms(lambda p=p, cap=cap: p.score_inputs([p.inputs(cap)]),
                                                        args.latency_reps)}
                del p
            base = res["torch"]["model"]["ms_median"]
            res["speedup_vs_torch"] = {b: base / res[b]["model"]["ms_median"] for b in ("onnx", "onnx-int8")}
            out[name] = res
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def backend_accuracy(run: Path, store_path: Path) -> dict:
    """A run's first test set scored by torch, ONNX fp32 and ONNX int8 (exported now if the run has no int8
    export): AUC, APCER/BPCER/HTER at the bundle's threshold, the largest score change against torch and the
    decisions that flip. The samples are read from ``store_path`` by the ids of the run's score file."""
    from mfas.data import open_store
    from mfas.engine.evaluation import read_scores
    from mfas.engine.export import export_onnx
    from mfas.inference.predictor import Predictor
    from mfas.metrics import roc_auc

    meta = json.loads((run / "model.json").read_text())
    if "int8" not in (meta.get("onnx") or {}) or meta["onnx"].get("weights_sha256") != meta["weights_sha256"]:
        export_onnx(run, int8=True)
        meta = json.loads((run / "model.json").read_text())
    store = open_store(store_path)
    ids = {sid: i for i, sid in enumerate(store.column("sample_id"))}
    thr = meta["threshold"]["value"]
    target = next(iter(json.loads((run / "metrics.json").read_text())["tests"]))
    sc = read_scores(run / "scores" / f"{target}.csv")
    label = sc["label"]
    res: dict = {"test": target, "test_samples": len(label), "threshold": thr,
                 "threshold_policy": meta["threshold"]["policy"]}
    scores = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        p = Predictor(run, backend=backend)
        items = [p.inputs({m: np.array(store.arrays[m][ids[sid]]) for m in p.modalities}) for sid in sc["sample_id"]]
        s = np.concatenate([p.score_inputs(items[k:k + 32]) for k in range(0, len(items), 32)])
        scores[backend] = s
        apcer, bpcer = float(np.mean(s[label == 0] >= thr)), float(np.mean(s[label == 1] < thr))
        res[backend] = {"auc": roc_auc(label, s), "apcer": apcer, "bpcer": bpcer, "hter": (apcer + bpcer) / 2}
    res["torch_vs_score_file_max_abs"] = float(np.abs(scores["torch"] - sc["score"]).max())
    for b in ("onnx", "onnx-int8"):
        res[b]["score_change_max_abs"] = float(np.abs(scores[b] - scores["torch"]).max())
        res[b]["decisions_flipped"] = int(np.sum((scores[b] >= thr) != (scores["torch"] >= thr)))
    return res


@bench("int8")
def int8_accuracy(args: argparse.Namespace) -> dict:
    """What int8 costs in accuracy: small models trained inside SimFAS domain W (the demo's recipe), exported,
    and the test set scored by torch, ONNX fp32 and ONNX int8 (:func:`backend_accuracy`). With ``--int8-runs
    RUN=STORE,...`` the given trained runs are measured instead (nothing is trained)."""
    if args.int8_runs:
        return {run: backend_accuracy(Path(run), Path(store))
                for run, store in (x.split("=", 1) for x in args.int8_runs.split(",") if x)}
    from mfas.cli.demo import IN_DOMAIN, demo_config
    from mfas.data.synth import generate_store
    from mfas.engine.config import validate_config
    from mfas.engine.train import train

    tmp = Path(tempfile.mkdtemp(prefix="mfas-bench-"))
    try:
        generate_store(tmp / "sim", per_domain=args.int8_per_domain, size=64, seed=0)
        out: dict = {"store": f"SimFAS, {args.int8_per_domain} samples per domain, 64x64", "protocol": IN_DOMAIN}
        for name in [n for n in args.int8_models.split(",") if n]:
            run = train(validate_config(demo_config(tmp, tmp / "sim", args.int8_epochs, 0, 64, name, IN_DOMAIN)))
            out[name] = {"epochs": args.int8_epochs, **backend_accuracy(run, tmp / "sim")}
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _add_fractions(d: dict, peak: float) -> None:
    """Next to every achieved ``gflops`` figure, its ``fraction_of_matmul_peak`` in the same run."""
    for v in d.values():
        if isinstance(v, dict):
            _add_fractions(v, peak)
    if isinstance(d.get("gflops"), float):
        d["fraction_of_matmul_peak"] = d["gflops"] / peak


def table(results: dict) -> str:
    lines = ["| benchmark | figure | value |", "|---|---|---|"]
    for name, res in results["benchmarks"].items():
        for k, v in _flatten(res):
            val = (f"{v:.3f}" if abs(v) < 10 else f"{v:,.1f}") if isinstance(v, float) else str(v)
            lines.append(f"| {name} | {k} | {val} |")
    m = results["machine"]
    return f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}\n\n" + "\n".join(lines)


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for the JSON and table")
    p.add_argument("--seconds", type=float, default=2.0, help="time per matmul size")
    p.add_argument("--store-samples", type=int, default=2000, help="samples in the store-read benchmark")
    p.add_argument("--sim-samples", type=int, default=2000, help="samples in the SimFAS benchmark")
    p.add_argument("--train-steps", type=int, default=40, help="timed optimiser steps in the training benchmark")
    p.add_argument("--train-repeats", type=int, default=2, help="runs per mode in the training benchmark")
    p.add_argument("--mmfas-steps", type=int, default=5, help="timed training steps in the mmFAS benchmark")
    p.add_argument("--mmfas-reps", type=int, default=20, help="timed batch-1 inferences in the mmFAS benchmark")
    p.add_argument("--mmda-steps", type=int, default=2, help="timed optimiser steps per path in the MMDA benchmark")
    p.add_argument("--mmda-model", default="mmda", help="MMDA size of the MMDA benchmark (mmda-tiny: a quick check)")
    p.add_argument("--mmda-accum", type=int, default=8, help="micro-batches of 3 per optimiser step (MMDA; 8 released)")
    p.add_argument("--mmda-train-paths", default="released:system,mfas:keep",
                   help="MMDA training: compute path (released | mfas) : host allocator (system: glibc's own "
                        "thresholds, as before trainer.cpu_allocator; keep: its default), comma separated; ratios "
                        "are to the first")
    p.add_argument("--prepare-videos", type=int, default=100, help="videos (x 3 frames) in the prepare benchmark")
    p.add_argument("--prepare-workers", default="1,2", help="worker counts to time in the prepare benchmark")
    p.add_argument("--mmda-reps", type=int, default=10, help="timed batch-1 inferences in the MMDA benchmark")
    p.add_argument("--latency-models", default="mmfas,cnn-concat,vit-concat,mmda",
                   help="models of the latency benchmark (registered names)")
    p.add_argument("--latency-reps", type=int, default=30, help="timed batch-1 calls per backend")
    p.add_argument("--int8-models", default="mmfas-tiny,cnn-concat-tiny", help="models of the int8 benchmark")
    p.add_argument("--int8-epochs", type=int, default=8, help="training epochs in the int8 benchmark")
    p.add_argument("--int8-per-domain", type=int, default=400, help="SimFAS samples per domain (int8)")
    p.add_argument("--int8-runs", default="", help="int8: measure these trained runs instead, RUN=STORE,...")
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    results = {"machine": machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "benchmarks": {}}
    for n in names:
        print(f"running {n} ...", flush=True)
        results["benchmarks"][n] = BENCHMARKS[n](args)
    if "matmul" in results["benchmarks"]:
        peak = results["peak_gflops"] = results["benchmarks"]["matmul"]["peak_gflops"]
        for res in results["benchmarks"].values():
            _add_fractions(res, peak)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"bench-{stamp}.json").write_text(json.dumps(results, indent=2))
    text = table(results)
    (args.out / f"bench-{stamp}.md").write_text(text + "\n")
    print(text)
    print(f"\nwrote {args.out / f'bench-{stamp}.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

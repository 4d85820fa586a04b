"""Load test of ``mfas serve``: throughput and latency percentiles at several concurrencies, and the server's
resident memory before and after many requests.

    python benchmarks/serve.py                       # full-size mmFAS, random weights, ONNX int8
    python benchmarks/serve.py --backend torch --requests 2000

The server runs as a subprocess (``mfas serve``) on the same machine as this client, so both share the cores;
figures name the machine. Writes a JSON and a Markdown table to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_run(path: Path, model: str, backend: str) -> Path:
    import torch

    from mfas.engine.export import export_onnx
    from mfas.engine.io import save_bundle
    from mfas.models import create_model

    torch.manual_seed(0)
    save_bundle(path, create_model(model).eval(), {"threshold": {"value": 0.5, "policy": "fixed:0.5"}})
    if backend != "torch":
        export_onnx(path, int8=backend == "onnx-int8")
    return path


def files(size: int) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for m in ("rgb", "depth", "ir"):
        a = rng.integers(0, 256, (size, size, 3) if m == "rgb" else (size, size), dtype=np.uint8)
        out[m] = (f"{m}.png", cv2.imencode(".png", a)[1].tobytes(), "image/png")
    return out


async def load(url: str, body: dict, concurrency: int, n: int) -> dict:
    import httpx

    lat: list[float] = []
    codes: dict[int, int] = {}
    left = n

    async def worker(client):
        nonlocal left
        while left > 0:
            left -= 1
            t = time.perf_counter()
            r = await client.post(url + "/v1/predict", files=body)
            lat.append(time.perf_counter() - t)
            codes[r.status_code] = codes.get(r.status_code, 0) + 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {"requests": n, "throughput_rps": n / wall, "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99)),
            "failed": sum(v for k, v in codes.items() if k != 200), "status": codes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mmfas")
    ap.add_argument("--backend", default="onnx-int8", choices=["torch", "onnx", "onnx-int8"])
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--per-level", type=int, default=300, help="requests per concurrency level")
    ap.add_argument("--requests", type=int, default=10000, help="requests of the memory soak")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--max-batch", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mfas-serve-"))
    run = make_run(tmp / "run", args.model, args.backend)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mfas.cli.main", "serve", str(run), "--backend", args.backend, "--port", str(port),
           "--log-level", "warning", "--max-batch", str(args.max_batch)]
    server = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        import httpx

        for _ in range(600):
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        body = files(args.image_size)
        asyncio.run(load(url, body, 1, 20))  # warm-up
        res: dict = {"model": args.model, "backend": args.backend, "image_size": args.image_size,
                     "max_batch": args.max_batch, "levels": {}}
        for c in [int(x) for x in args.concurrency.split(",")]:
            res["levels"][c] = asyncio.run(load(url, body, c, args.per_level))
            print(f"concurrency {c}: {res['levels'][c]}", flush=True)
        before = rss_mb(server.pid)
        soak = asyncio.run(load(url, body, 8, args.requests))
        after = rss_mb(server.pid)
        res["soak"] = {**soak, "rss_before_mb": before, "rss_after_mb": after, "rss_growth_mb": after - before}
        print(f"soak: {res['soak']}", flush=True)
    finally:
        server.terminate()
        server.wait(30)
    res["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"serve-{stamp}.json").write_text(json.dumps(res, indent=2))
    lines = ["| concurrency | requests | throughput req/s | p50 ms | p95 ms | p99 ms | failed |",
             "|---|---|---|---|---|---|---|"]
    for c, r in res["levels"].items():
        lines.append(f"| {c} | {r['requests']} | {r['throughput_rps']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['failed']} |")
    s = res["soak"]
    lines.append(f"\nsoak: {s['requests']} requests at concurrency 8, {s['failed']} failed, "
                 f"RSS {s['rss_before_mb']:.0f} -> {s['rss_after_mb']:.0f} MB")
    (args.out / f"serve-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Per-op profiles of full-size MMDA on this machine (torch.profiler, CPU), before and after the exact savings.

    python benchmarks/profile_mmda.py [--out benchmarks/results] [--rows 10]

Writes ``profile-mmda-<time>.md``: for batch-1 inference (clean mode) and for one optimiser step at the released
recipe (``compat: official``, micro-batches of 3, ``--accum`` per step), the ops that take the most time, as the
released path runs them (one image-tower pass per modality, 77-position prompts re-encoded in every micro-batch)
and as mfas runs them (one pass for the three modalities, prompts once per step over the longest prompt, the
prompt side of U-DSA cached at inference). Random weights; times are this machine's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import _adamw_step, _mm_batch, _released_towers, machine, use_path


def top_ops(prof, rows: int) -> tuple[str, float]:
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    lines = ["| op | calls | self ms | share |", "|---|---|---|---|"]
    for e in events[:rows]:
        lines.append(f"| `{e.key}` | {e.count} | {e.self_cpu_time_total / 1e3:,.1f} | "
                     f"{100 * e.self_cpu_time_total / total:.1f}% |")
    return "\n".join(lines), total / 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for the markdown file")
    p.add_argument("--rows", type=int, default=10, help="ops per table")
    p.add_argument("--calls", type=int, default=5, help="inference calls profiled (times in the table are their sum)")
    p.add_argument("--accum", type=int, default=8, help="micro-batches of 3 per optimiser step")
    p.add_argument("--model", default="mmda", help="MMDA size (mmda-tiny: a quick check)")
    args = p.parse_args(argv)
    from mfas.models import create_model

    m = machine()
    parts = [f"# MMDA per-op profiles\n\n{m['cpu']}, {m['cores']} cores, torch {m['torch']} "
             f"({m['torch_threads']} threads), {time.strftime('%Y-%m-%d %H:%M')}\n"]
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    size = model.input_size[0]
    x1 = _mm_batch(1, size)
    with torch.inference_mode():
        for label in ("mfas", "released"):
            if label == "released":
                _released_towers(model)
                model.text_levels = lambda spoof, live: None
            for _ in range(3):
                model(x1)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(args.calls):
                    model(x1)
            table, total = top_ops(prof, args.rows)
            parts.append(f"## Inference, batch 1, {label} path: {args.calls} calls, {total / args.calls:,.0f} ms of "
                         f"op time per call\n\n{table}\n")
    del model
    torch.manual_seed(0)
    model = create_model(args.model, compat="official").train()
    micro = []
    for _ in range(args.accum):
        mb = _mm_batch(3, size)
        mb["domain"] = ["A", "A", "B"]
        micro.append(mb)
    for label in ("released", "mfas"):
        released = label == "released"
        use_path(model, label)
        opt = torch.optim.AdamW(model.param_groups(5e-5), lr=5e-6, **({"foreach": True} if released
                                                                     else {"fused": True}))
        _adamw_step(model, micro[:1], opt, phases=not released)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            _adamw_step(model, micro, opt, phases=not released)
        table, total = top_ops(prof, args.rows)
        parts.append(f"## Training, one optimiser step of {args.accum} x 3, {label} path: {total / 1e3:,.1f} s of "
                     f"op time\n\n{table}\n")
        del opt
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"profile-mmda-{time.strftime('%Y%m%d-%H%M%S')}.md"
    path.write_text("\n".join(parts))
    print("\n".join(parts))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

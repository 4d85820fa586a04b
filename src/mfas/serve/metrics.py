"""Prometheus text-format metrics of the service, kept in memory per process (no client library needed).

Several ``--workers`` processes each keep their own; scrape each replica or aggregate in Prometheus."""

from __future__ import annotations

import threading
from collections import Counter

#: request latency buckets (seconds)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(**kw: str) -> str:
    inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in kw.items())
    return "{" + inner + "}"


class Metrics:
    """Counters of requests (by path and status) and decisions, a latency histogram, queue gauges."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.decisions: Counter[str] = Counter()
        self.buckets = [0] * len(BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.queue_depth = 0  # requests waiting or running in the model
        self.batches = 0
        self.batched_requests = 0

    def observe(self, path: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(path, status)] += 1
            if path == "/v1/predict":
                self.latency_sum += seconds
                self.latency_count += 1
                for i, b in enumerate(BUCKETS):
                    if seconds <= b:
                        self.buckets[i] += 1

    def decision(self, decision: str) -> None:
        with self._lock:
            self.decisions[decision] += 1

    def batch(self, size: int) -> None:
        with self._lock:
            self.batches += 1
            self.batched_requests += size

    def render(self) -> str:
        with self._lock:
            out = ["# HELP mfas_requests_total HTTP requests by path and status.",
                   "# TYPE mfas_requests_total counter"]
            out += [f"mfas_requests_total{_labels(path=p, status=str(s))} {n}"
                    for (p, s), n in sorted(self.requests.items())]
            out += ["# HELP mfas_decisions_total Decisions returned by /v1/predict.",
                    "# TYPE mfas_decisions_total counter"]
            out += [f"mfas_decisions_total{_labels(decision=d)} {n}" for d, n in sorted(self.decisions.items())]
            out += ["# HELP mfas_predict_seconds Latency of /v1/predict, reading the upload to the answer.",
                    "# TYPE mfas_predict_seconds histogram"]
            out += [f"mfas_predict_seconds_bucket{_labels(le=str(b))} {n}"
                    for b, n in zip(BUCKETS, self.buckets, strict=True)]
            out += [f'mfas_predict_seconds_bucket{{le="+Inf"}} {self.latency_count}',
                    f"mfas_predict_seconds_sum {self.latency_sum:.6f}",
                    f"mfas_predict_seconds_count {self.latency_count}",
                    "# HELP mfas_queue_depth Requests waiting for or running in the model.",
                    "# TYPE mfas_queue_depth gauge", f"mfas_queue_depth {self.queue_depth}",
                    "# HELP mfas_batches_total Model calls (several requests each with micro-batching).",
                    "# TYPE mfas_batches_total counter", f"mfas_batches_total {self.batches}",
                    "# TYPE mfas_batched_requests_total counter",
                    f"mfas_batched_requests_total {self.batched_requests}"]
            return "\n".join(out) + "\n"

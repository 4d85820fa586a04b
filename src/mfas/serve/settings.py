"""The service's limits and options, with their documented defaults (docs/serve.md)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ServeSettings(BaseModel):
    """Everything ``mfas serve`` can be told; every limit answers with a clear 4xx/5xx when exceeded."""

    model_config = ConfigDict(extra="forbid")

    run: Path  # run folder or bundle
    backend: str = "torch"  # torch, onnx or onnx-int8
    device: str = "cpu"
    #: bytes of one uploaded image (413 above)
    max_upload_bytes: int = Field(8 << 20, ge=1024)
    #: pixels of one image, read from its header before decoding (413 above): 4096 x 4096
    max_pixels: int = Field(4096 * 4096, ge=64)
    #: faces scored in one request with all_faces=true (the largest ones)
    max_faces: int = Field(4, ge=1, le=64)
    #: requests waiting or running at once; beyond it 503 with Retry-After
    queue_size: int = Field(32, ge=1)
    #: seconds a request may wait and run before 504
    timeout_s: float = Field(10.0, gt=0)
    #: micro-batching: up to this many requests scored in one call (1: off)
    max_batch: int = Field(1, ge=1, le=256)
    #: micro-batching: how long the first request of a batch waits for others (milliseconds)
    max_wait_ms: float = Field(2.0, ge=0, le=1000)
    #: write every request's images here (nothing is written otherwise)
    log_captures: Path | None = None
    #: when set, /v1/* and /metrics need the header X-API-Key with this value
    api_key: str | None = Field(None, min_length=8)
    #: origins allowed by CORS (none: CORS off)
    cors_origins: list[str] = []

"""``mfas serve RUN``: the liveness service and its page (docs/serve.md)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import typer

from mfas.cli.common import friendly_errors


@friendly_errors
def serve_cmd(run: Path = typer.Argument(..., help="Run folder or bundle (model.json + weights)."),
              backend: str = typer.Option("torch", "--backend", help="torch, onnx or onnx-int8 (onnx needs "
                                                                     "`mfas export RUN --format onnx` first)."),
              host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every "
                                                                   "interface; put a TLS proxy in front)."),
              port: int = typer.Option(8000, "--port", min=1, max=65535),
              workers: int = typer.Option(1, "--workers", min=1, max=64,
                                          help="Processes, each with its own model copy and metrics."),
              device: str = typer.Option("cpu", "--device", help="torch device for --backend torch."),
              max_upload_bytes: int = typer.Option(8 << 20, "--max-upload-bytes", help="Bytes per image (413)."),
              max_pixels: int = typer.Option(4096 * 4096, "--max-pixels",
                                             help="Pixels per image, read from the header before decoding (413)."),
              max_faces: int = typer.Option(4, "--max-faces", help="Faces scored per request with all_faces."),
              queue_size: int = typer.Option(32, "--queue-size",
                                             help="Requests waiting or running at once; beyond: 503 Retry-After."),
              timeout_s: float = typer.Option(10.0, "--timeout", help="Seconds per request before 504."),
              max_batch: int = typer.Option(1, "--max-batch", help="Micro-batching: requests per model call "
                                                                   "(1: off)."),
              max_wait_ms: float = typer.Option(2.0, "--max-wait-ms",
                                                help="Micro-batching: how long a batch waits to fill."),
              log_captures: Path = typer.Option(None, "--log-captures",
                                                help="Write every request's images here (nothing is written "
                                                     "otherwise)."),
              api_key_file: Path = typer.Option(None, "--api-key-file",
                                                help="File with the key that /v1/* and /metrics require in the "
                                                     "X-API-Key header."),
              cors_origin: list[str] = typer.Option([], "--cors-origin",
                                                    help="Origin allowed by CORS (repeatable; CORS is off "
                                                         "otherwise)."),
              log_level: str = typer.Option("info", "--log-level", help="uvicorn's log level.")) -> None:
    """Serve RUN over HTTP: POST /v1/predict, GET /v1/model, /healthz, /readyz, /metrics, and the page at /.

    Access logs are JSON lines on stderr."""
    import uvicorn

    from mfas.errors import ConfigError
    from mfas.serve.app import _SETTINGS_ENV, create_app
    from mfas.serve.settings import ServeSettings

    key = None
    if api_key_file is not None:
        try:
            key = api_key_file.read_text().strip()
        except OSError as e:
            raise ConfigError(f"--api-key-file {api_key_file}: cannot be read ({e.strerror or e})") from None
        if len(key) < 8:
            raise ConfigError(f"--api-key-file {api_key_file}: the key must have at least 8 characters")
    try:
        settings = ServeSettings(run=run, backend=backend, device=device, max_upload_bytes=max_upload_bytes,
                                 max_pixels=max_pixels, max_faces=max_faces, queue_size=queue_size,
                                 timeout_s=timeout_s, max_batch=max_batch, max_wait_ms=max_wait_ms,
                                 log_captures=log_captures, api_key=key, cors_origins=cors_origin)
    except ValueError as e:  # pydantic's ValidationError
        errs = getattr(e, "errors", lambda: [])()
        where = ", ".join(f"--{'-'.join(str(x) for x in err['loc']).replace('_', '-')}: {err['msg']}" for err in errs)
        raise ConfigError(where or str(e)) from None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("mfas.serve.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    print(f"mfas serve: {run} ({backend}) on http://{host}:{port}/", file=sys.stderr)
    if workers == 1:
        app = create_app(settings)  # load errors show here, before listening
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
    else:
        create_app(settings)  # check the bundle loads before forking workers
        os.environ[_SETTINGS_ENV] = json.dumps(settings.model_dump(mode="json"))
        uvicorn.run("mfas.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level, access_log=False)

"""The FastAPI app: ``POST /v1/predict``, ``GET /v1/model``, ``/healthz``, ``/readyz``, ``/metrics`` and the page.

Uploads are read into memory only (never spooled to disk), checked against the limits of
:class:`~mfas.serve.settings.ServeSettings` (bytes, declared type, the pixel count from the header before
decoding), decoded exactly as :func:`mfas.data.images.read_image` decodes files, so a score from the API equals
``mfas.load(run).predict`` on the same file. Errors are JSON ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from email import policy as email_policy
from email.parser import BytesParser
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from mfas.conventions import MODALITIES
from mfas.data.images import decode_modality, read_header
from mfas.errors import MfasError
from mfas.inference.predictor import Predictor
from mfas.serve.metrics import Metrics
from mfas.serve.scorer import Scorer
from mfas.serve.settings import ServeSettings

access_log = logging.getLogger("mfas.serve.access")
#: declared content types accepted for an image part; octet-stream is sniffed from the header
IMAGE_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/bmp": "BMP", "image/x-ms-bmp": "BMP",
               "image/webp": "WebP", "image/tiff": "TIFF", "application/octet-stream": None}
_EXT = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "WebP": "webp", "TIFF": "tif"}
_SETTINGS_ENV = "MFAS_SERVE_SETTINGS"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class Service:
    """The loaded model, its limits and counters; one per process."""

    def __init__(self, settings: ServeSettings, predictor: Predictor | None = None):
        self.settings = settings
        self.predictor = predictor or Predictor(settings.run, device=settings.device, backend=settings.backend)
        self.metrics = Metrics()
        self.scorer = Scorer(self.predictor, self.metrics, settings.max_batch, settings.max_wait_ms)
        # decoding and detection: one thread (OpenCV's face detector is not re-entrant), beside the model thread
        self.prep_pool = ThreadPoolExecutor(1, thread_name_prefix="mfas-prep")
        self.pending = 0
        meta = self.predictor.meta
        self.model_info = {"name": self.predictor.name, "weights_sha256": meta["weights_sha256"],
                           "backend": settings.backend}

    # ----------------------------------------------------------------------------------------------- parsing

    def _image(self, name: str, data: bytes, declared: str | None) -> tuple[bytes, str]:
        s = self.settings
        if len(data) == 0:
            raise ApiError(400, "empty_image", f"{name}: the image is empty")
        if len(data) > s.max_upload_bytes:
            raise ApiError(413, "image_too_large",
                           f"{name}: {len(data):,} bytes, more than the limit of {s.max_upload_bytes:,} bytes")
        if declared is not None and declared not in IMAGE_TYPES:
            raise ApiError(415, "unsupported_type", f"{name}: content type {declared!r} is not accepted; send "
                                                    f"one of {', '.join(sorted(IMAGE_TYPES))}")
        try:
            head = read_header(data, name)
        except MfasError as e:
            raise ApiError(400, "bad_image", str(e)) from None
        want = IMAGE_TYPES.get(declared or "")
        if want is not None and want != head.format:
            raise ApiError(415, "type_mismatch", f"{name}: declared {declared} but the content is {head.format}")
        if head.width * head.height > s.max_pixels:
            raise ApiError(413, "too_many_pixels",
                           f"{name}: {head.width}x{head.height} ({head.width * head.height:,} pixels) exceeds the "
                           f"limit of {s.max_pixels:,} pixels (checked before decoding)")
        return data, head.format

    def parse(self, content_type: str, body: bytes) -> tuple[dict[str, tuple[bytes, str]], bool]:
        """The request's images {modality: (bytes, format)} and its all_faces flag."""
        ctype = content_type.split(";")[0].strip().lower()
        raw: dict[str, tuple[bytes, str | None]] = {}
        all_faces = False
        if ctype == "multipart/form-data":
            msg = BytesParser(policy=email_policy.HTTP).parsebytes(
                b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
            if not msg.is_multipart():
                raise ApiError(400, "bad_form", "the multipart body could not be parsed (boundary?)")
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True) or b""
                if name in MODALITIES:
                    if name in raw:
                        raise ApiError(400, "duplicate_field", f"{name} is given twice")
                    declared = part.get_content_type() if part.get("content-type") else "application/octet-stream"
                    raw[name] = (payload, declared)
                elif name == "all_faces":
                    all_faces = payload.strip().lower() in (b"1", b"true", b"yes", b"on")
                else:
                    raise ApiError(400, "unknown_field", f"unknown form field {name!r}; expected rgb, depth, ir, "
                                                         "all_faces")
        elif ctype == "application/json":
            try:
                obj = json.loads(body)
            except (ValueError, UnicodeDecodeError) as e:
                raise ApiError(400, "bad_json", f"the body is not JSON ({e})") from None
            if not isinstance(obj, dict):
                raise ApiError(400, "bad_json", "expected a JSON object {\"rgb\": base64, ...}")
            unknown = sorted(set(obj) - set(MODALITIES) - {"all_faces"})
            if unknown:
                raise ApiError(400, "unknown_field", f"unknown key(s) {', '.join(unknown)}; expected rgb, depth, ir, "
                                                     "all_faces")
            all_faces = bool(obj.get("all_faces", False))
            for m in MODALITIES:
                if obj.get(m) is None:
                    continue
                if not isinstance(obj[m], str):
                    raise ApiError(400, "bad_base64", f"{m}: expected a base64 string")
                text = obj[m].split(",", 1)[1] if obj[m].startswith("data:") else obj[m]
                try:
                    raw[m] = (base64.b64decode(text, validate=True), None)
                except (binascii.Error, ValueError):
                    raise ApiError(400, "bad_base64", f"{m}: not valid base64") from None
        else:
            raise ApiError(415, "unsupported_body", f"send multipart/form-data or application/json, not {ctype!r}")
        if "rgb" not in raw and self.predictor.crop is not None:
            raise ApiError(400, "missing_rgb", "rgb is required: the model finds the face in RGB")
        if not raw:
            raise ApiError(400, "missing_rgb", "no image: send rgb (and optionally depth, ir)")
        return {m: self._image(m, d, t) for m, (d, t) in raw.items()}, all_faces

    def prepare(self, images: dict[str, tuple[bytes, str]], all_faces: bool):
        """Decode, detect and crop (in the preprocessing thread)."""
        try:
            arrays = {m: decode_modality(d, m, m) for m, (d, _) in images.items()}
        except MfasError as e:
            raise ApiError(400, "bad_image", str(e)) from None
        try:
            items, used = self.predictor.prepare(largest_only=not all_faces, **arrays)
        except MfasError as e:
            # the images decoded: what is left is their fit to the model (modalities, sizes)
            raise ApiError(422, "bad_input", str(e)) from None
        return items[: self.settings.max_faces], used

    def log_captures(self, request_id: str, images: dict[str, tuple[bytes, str]]) -> None:
        root = self.settings.log_captures
        if root is None:
            return
        folder = Path(root) / request_id
        folder.mkdir(parents=True, exist_ok=True)
        for m, (data, fmt) in images.items():
            dst = folder / f"{m}.{_EXT[fmt]}"
            tmp = dst.with_name(dst.name + ".part")
            tmp.write_bytes(data)
            os.replace(tmp, dst)


def settings_from_env() -> ServeSettings:
    return ServeSettings.model_validate_json(os.environ[_SETTINGS_ENV])


def app_from_env() -> FastAPI:
    """uvicorn's factory for ``--workers N``: every worker process reads the settings from the environment."""
    return create_app(settings_from_env())


def create_app(settings: ServeSettings, predictor: Predictor | None = None) -> FastAPI:
    """The service for ``settings.run``; ``predictor``: an already loaded one (tests)."""
    svc = Service(settings, predictor)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await svc.scorer.start()
        yield
        await svc.scorer.stop()
        svc.prep_pool.shutdown(wait=False)

    app = FastAPI(title="mfas liveness service", version="1", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.service = svc
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key", "Content-Type"])

    @app.middleware("http")
    async def access(request: Request, call_next):
        t0 = time.perf_counter()
        rid = request.headers.get("x-request-id", "")[:64] or uuid.uuid4().hex
        request.state.request_id = rid
        status = 500
        try:
            if settings.api_key and (request.url.path.startswith("/v1/") or request.url.path == "/metrics"):
                given = request.headers.get("x-api-key", "")
                if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
                    response = _error(401, "unauthorized", "missing or wrong X-API-Key header")
                    status = 401
                    return response
            response = await call_next(request)
            status = response.status_code
            response.headers["X-Request-ID"] = rid
            return response
        finally:
            dt = time.perf_counter() - t0
            path = request.url.path if request.url.path in _KNOWN else "other"
            svc.metrics.observe(path, status, dt)
            access_log.info(json.dumps({"ts": round(time.time(), 3), "request_id": rid, "method": request.method,
                                        "path": request.url.path, "status": status, "ms": round(dt * 1000, 2),
                                        "client": request.client.host if request.client else None}))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return _error(e.status, e.code, e.message, e.headers)

    @app.post("/v1/predict")
    async def predict(request: Request):
        t0 = time.perf_counter()
        if svc.pending >= settings.queue_size:
            raise ApiError(503, "busy", f"{svc.pending} requests are waiting (queue size {settings.queue_size}); "
                                        "retry shortly", {"Retry-After": "1"})
        limit = 3 * settings.max_upload_bytes + (64 << 10)  # three images and the form around them
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise ApiError(413, "body_too_large", f"request body of {length} bytes; at most {limit:,}")
        svc.pending += 1
        svc.metrics.queue_depth = svc.pending
        try:
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise ApiError(413, "body_too_large", f"request body larger than {limit:,} bytes")
            images, all_faces = svc.parse(request.headers.get("content-type", ""), bytes(body))
            loop = asyncio.get_running_loop()

            async def run():
                items, used = await loop.run_in_executor(svc.prep_pool, svc.prepare, images, all_faces)
                scores = await svc.scorer.score([x for x, _ in items]) if items else []
                return items, used, scores

            try:
                items, used, scores = await asyncio.wait_for(run(), settings.timeout_s)
            except TimeoutError:
                raise ApiError(504, "timeout", f"not answered within {settings.timeout_s:g} s") from None
            svc.log_captures(request.state.request_id, images)
        finally:
            svc.pending -= 1
            svc.metrics.queue_depth = svc.pending
        p = svc.predictor
        results = [p.result(float(s), used, f) for s, (_, f) in zip(scores, items, strict=True)] or \
            [p.result(None, used)]
        for r in results:
            svc.metrics.decision(r.decision)
        out = {"request_id": request.state.request_id, **results[0].as_dict(), "model": svc.model_info,
               "latency_ms": round((time.perf_counter() - t0) * 1000, 2)}
        if all_faces:
            out["faces"] = [r.as_dict() for r in results]
        return out

    @app.get("/v1/model")
    async def model():
        p, s = svc.predictor, settings
        return {**svc.model_info, "modalities": list(p.modalities), "input_size": list(p.size),
                "supports_missing": p.supports_missing, "threshold": p.threshold, "policy": p.policy,
                "crop": p.meta["preprocessing"].get("crop"),
                "limits": {"max_upload_bytes": s.max_upload_bytes, "max_pixels": s.max_pixels,
                           "max_faces": s.max_faces, "queue_size": s.queue_size, "timeout_s": s.timeout_s,
                           "max_batch": s.max_batch, "max_wait_ms": s.max_wait_ms},
                "api_key_required": bool(s.api_key)}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if not svc.scorer.running:
            return _error(503, "not_ready", "the model loop is not running")
        return {"status": "ready", "pending": svc.pending}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(svc.metrics.render(), media_type="text/plain; version=0.0.4")

    static = resources.files("mfas.serve") / "static"

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(str(static / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app


_KNOWN = {"/v1/predict", "/v1/model", "/healthz", "/readyz", "/metrics", "/"}
__all__ = ["ApiError", "create_app", "app_from_env"]

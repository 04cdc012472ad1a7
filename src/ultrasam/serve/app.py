"""Build the ASGI app around a model (:func:`create_app`) and run it (:func:`serve`)."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError
from .settings import ServeSettings

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


def model_info(model: Any, checkpoint: str | Path | None) -> dict[str, Any]:
    """What /health and the page show about the model (no server paths: the file name only)."""
    cfg = model.config
    name = "bundled default model" if checkpoint is None else Path(checkpoint).name
    return {"name": name, "variant": cfg.variant,
            "format": getattr(model, "checkpoint_format", None),
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "img_size": int(cfg.img_size)}


def create_app(model: Any, settings: ServeSettings | None = None,
               checkpoint: str | Path | None = None) -> Any:
    """The FastAPI app serving ``model`` (any model :class:`ultrasam.inference.predictor.Predictor`
    accepts), wrapped in the request guard (:mod:`ultrasam.serve.guard`)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from .guard import Guard
    from .routes import UPLOAD_PATH, ApiError, Context, router
    from .schemas import ModelInfo
    from .store import ImageStore
    from .worker import ModelWorker

    settings = settings or ServeSettings()
    root = Path(tempfile.mkdtemp(prefix="ultrasam-serve-"))
    # Described before the worker prepares the model (bf16 folds its BatchNorm layers away,
    # which would change the parameter count the page shows).
    info = ModelInfo(**model_info(model, checkpoint))
    ctx = Context(settings=settings, store=ImageStore(root, settings),
                  worker=ModelWorker(model, settings.model_threads, settings.torch_threads,
                                     settings.max_batch, settings.precision),
                  model=info)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            ctx.worker.close()
            shutil.rmtree(root, ignore_errors=True)

    app = FastAPI(title="ultrasam serve", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None,
                  description="Promptable ultrasound segmentation over HTTP: upload an image, "
                              "send clicks or a box, get COCO RLE masks with measurements.")
    app.state.ctx = ctx

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # One readable line per problem, e.g. "body.points.0.2: Input should be 0 or 1".
        problems = ["{}: {}".format(".".join(str(p) for p in e.get("loc", ())), e.get("msg"))
                    for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(problems) or "invalid request"},
                            status_code=422)

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html")

    return Guard(app, settings, UPLOAD_PATH)


def serve(checkpoint: str | Path | None = None, settings: ServeSettings | None = None,
          format: str | None = None, device: str = "cpu") -> None:
    """Load a model (``None``: the bundled default) and serve the app until interrupted."""
    try:
        import uvicorn
    except ImportError as exc:
        raise MissingDependencyError("ultrasam serve needs its extra: pip install 'ultrasam[serve]'") \
            from exc
    from ultrasam.weights.checkpoints import load_model

    settings = settings or ServeSettings()
    model = load_model(checkpoint, device=device, format=format)
    app = create_app(model, settings, checkpoint)
    url = f"http://{_url_host(settings.host)}:{settings.port}/"
    if settings.token:
        url += f"?token={settings.token}"
    log.info("ultrasam serve: model %s (%s); open %s", model_info(model, checkpoint)["name"],
             model.config.variant, url)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        import socket

        return socket.gethostname()
    return f"[{host}]" if ":" in host else host

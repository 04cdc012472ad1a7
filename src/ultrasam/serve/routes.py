"""The HTTP API. Handlers are ``async`` and push every blocking step to a thread: decoding and
encoding to Starlette's thread pool, model calls to the single model thread."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any

import cv2
import numpy as np
from fastapi import APIRouter, File, Path, Query, Request, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ultrasam.data.coco import encode_rle

from . import export as exporters
from .measure import measure
from .probe import UploadRejected, detect_format, probe_upload
from .schemas import (
    AxisInfo,
    ExportRequest,
    Health,
    ImageInfo,
    ModelInfo,
    PropagateRequest,
    PropagateResponse,
    SegmentRequest,
    SegmentResponse,
    WorkerInfo,
)
from .settings import ServeSettings
from .store import (
    Frame,
    ImageStore,
    MaskRecord,
    NotFound,
    StoredImage,
    calibration_status,
    display_name,
    new_id,
)
from .worker import ModelWorker, PromptSpec

UPLOAD_PATH = "/api/images"
_CHUNK = 1 << 20
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": None, "description": text} for code, text in (
        (401, "token missing or wrong"), (404, "unknown image or mask id"),
        (413, "upload, frame or volume over the limits"), (415, "unsupported file type"),
        (422, "invalid request (message says which field and why)"))}
ImageId = Path(pattern=r"^[A-Za-z0-9_-]{16,64}$", description="id returned by the upload")


class ApiError(Exception):
    """Answered as ``{"detail": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Context:
    settings: ServeSettings
    store: ImageStore
    worker: ModelWorker
    model: ModelInfo
    tracking: bool = True  # the propagate route (ultrasam.inference.tracking)


def ctx(request: Request) -> Context:
    return request.app.state.ctx  # type: ignore[no-any-return]


def _image(request: Request, image_id: str) -> StoredImage:
    try:
        return ctx(request).store.get(image_id)
    except NotFound as exc:
        raise ApiError(404, str(exc)) from exc


def _info(image: StoredImage) -> ImageInfo:
    a0 = image.probe.axes[0]
    return ImageInfo(
        image_id=image.image_id, name=image.name, format=image.probe.format,
        kind=image.probe.kind, width=a0.width, height=a0.height, frames=a0.frames,
        default_frame=image.default_frame,
        spacing_mm=list(image.spacing_mm) if image.spacing_mm else None,
        calibration=image.calibration, warnings=list(image.warnings),
        axes=[AxisInfo(frames=a.frames, width=a.width, height=a.height)
              for a in image.probe.axes])


async def _frame(request: Request, image: StoredImage, axis: int, index: int) -> Frame:
    store = ctx(request).store
    try:
        store.check_frame(image, axis, index)
        return await run_in_threadpool(store.frame, image, axis, index)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from exc
    except FileNotFoundError as exc:  # deleted or evicted while this request waited
        raise ApiError(404, f"image {image.image_id!r} was removed") from exc


router = APIRouter()


@router.get("/health", response_model=Health, tags=["server"])
async def health(request: Request) -> Health:
    """Liveness, the model served, cache use and limits."""
    c = ctx(request)
    s = c.settings
    stats = c.store.frames.stats()
    w = c.worker
    return Health(status="ok", model=c.model, images=len(c.store), cache=stats.__dict__,
                  tracking=c.tracking,
                  worker=WorkerInfo(model_threads=w.threads, torch_threads=w.torch_threads,
                                    max_batch=w.max_batch, precision=w.precision),
                  limits={"max_upload_mb": s.max_upload_mb,
                          "max_frame_pixels": s.max_frame_pixels,
                          "max_decoded_mb": s.max_decoded_mb, "max_frames": s.max_frames,
                          "cache_mb": s.cache_mb, "max_images": s.max_images})


@router.post(UPLOAD_PATH, response_model=ImageInfo, status_code=201, responses=ERRORS,
             tags=["images"])
async def upload_image(request: Request, file: UploadFile = File(
        description="PNG/JPEG/TIFF/BMP/GIF/WebP, DICOM (single or multi-frame), NIfTI or "
                    "MetaImage (.mha); the type is read from the content")) -> ImageInfo:
    """Upload an image; answers its id, size, frame count and calibration."""
    c = ctx(request)
    image_id, path = c.store.reserve()
    try:
        size = 0
        out = await run_in_threadpool(open, path, "wb")
        try:
            while chunk := await file.read(_CHUNK):
                size += len(chunk)
                if size > c.settings.max_upload_bytes:
                    raise ApiError(413, f"upload is over the limit of "
                                        f"{c.settings.max_upload_mb:g} MiB")
                await run_in_threadpool(out.write, chunk)
        finally:
            out.close()
        if size == 0:
            raise ApiError(422, "the uploaded file is empty")
        image, first = await run_in_threadpool(_open_upload, c, image_id, path,
                                               display_name(file.filename))
    except UploadRejected as exc:
        path.unlink(missing_ok=True)
        raise ApiError(exc.status, str(exc)) from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    c.store.add(image, first)
    return _info(image)


def _open_upload(c: Context, image_id: str, path: FilePath, name: str
                 ) -> tuple[StoredImage, Frame]:
    """Sniff, rename to the server's name + suffix, check headers, decode the default frame
    (blocking: runs in a thread)."""
    fmt, suffix = detect_format(path)
    final = path.with_name(image_id + suffix)
    path.rename(final)
    try:
        probe = probe_upload(final, fmt, c.settings)
        default = probe.axes[0].frames // 2 if probe.kind == "volume" else 0
        image = StoredImage(image_id=image_id, name=name, path=final, probe=probe,
                            default_frame=default, spacing_mm=None, calibration="uncalibrated",
                            warnings=())
        try:
            first = c.store.frame(image, 0, default)
        except ImportError as exc:
            raise UploadRejected(415, f"this server cannot read {fmt}: {exc}") from exc
        except ValueError as exc:
            raise UploadRejected(422, f"cannot decode the {fmt} file: "
                                      f"{str(exc).replace(str(final), 'upload')}") from exc
    except BaseException:
        final.unlink(missing_ok=True)
        c.store.frames.discard(lambda key: key[0] == image_id)
        raise
    image.spacing_mm = first.spacing_mm
    image.calibration = calibration_status(first)
    # Frame-choice notes ("using frame 0") are the page's business; keep the rest.
    image.warnings = tuple(w for w in first.warnings if "pass frame=" not in w
                           and "pass slice=" not in w)
    return image, first


@router.get(UPLOAD_PATH + "/{image_id}", response_model=ImageInfo, responses=ERRORS,
            tags=["images"])
async def image_info(request: Request, image_id: str = ImageId) -> ImageInfo:
    """What the upload answered, again."""
    return _info(_image(request, image_id))


@router.delete(UPLOAD_PATH + "/{image_id}", status_code=204, responses=ERRORS, tags=["images"])
async def delete_image(request: Request, image_id: str = ImageId) -> Response:
    """Forget an image: its file, frames, embeddings and masks."""
    try:
        await run_in_threadpool(ctx(request).store.delete, image_id)
    except NotFound as exc:
        raise ApiError(404, str(exc)) from exc
    return Response(status_code=204)


@router.get(UPLOAD_PATH + "/{image_id}/frames/{index}", responses={
    200: {"content": {"image/png": {}}, "description": "the frame as shown to the model"},
    **ERRORS}, response_class=Response, tags=["images"])
async def frame_png(request: Request, image_id: str = ImageId,
                    index: int = Path(ge=0, description="frame or slice"),
                    axis: int = Query(0, ge=0, le=2, description="volume axis")) -> Response:
    """One frame (cine) or slice (volume) as an RGB/grey PNG, for display."""
    image = _image(request, image_id)
    frame = await _frame(request, image, axis, index)
    if frame.png is None:
        frame.png = await run_in_threadpool(_encode_png, frame.rgb)
        ctx(request).store.charge(image, axis, index)
    return Response(frame.png, media_type="image/png",
                    headers={"cache-control": "private, max-age=3600"})


def _encode_png(rgb: np.ndarray) -> bytes:
    grey = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    pixels = rgb[..., 0] if grey else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, png = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError("PNG encoding failed")
    return png.tobytes()


@router.post(UPLOAD_PATH + "/{image_id}/segment", response_model=SegmentResponse,
             responses=ERRORS, tags=["segment"])
async def segment(request: Request, body: SegmentRequest,
                  image_id: str = ImageId) -> SegmentResponse:
    """Segment one object on one frame from points and/or a box (image pixels).

    The frame's embedding is computed on the first request and cached; later prompts on that
    frame only run the decoder."""
    c = ctx(request)
    image = _image(request, image_id)
    if not body.points and body.box is None:
        raise ApiError(422, "no prompt: give at least one point or a box")
    frame = await _frame(request, image, body.axis, body.frame)
    pts = np.array([[x, y] for x, y, _ in body.points], dtype=np.float64) if body.points \
        else None
    labels = np.array([lab for _, _, lab in body.points], dtype=np.int64) if body.points \
        else None
    box = np.array(body.box, dtype=np.float64) if body.box is not None else None
    try:
        result = await c.worker.segment(frame, PromptSpec(pts, labels, box, body.refine))
    except (ValueError, TypeError) as exc:
        raise ApiError(422, str(exc)) from exc
    if result.embedded:
        c.store.charge(image, body.axis, body.frame)
    rle, m = await run_in_threadpool(_encode_and_measure, result.mask, frame)
    record = MaskRecord(new_id(12), body.axis, body.frame, rle, result.score, m)
    c.store.add_mask(image, record)
    return SegmentResponse(mask_id=record.mask_id, rle=rle, score=result.score,
                           frame=body.frame, axis=body.axis, embedded=result.embedded,
                           model_ms=round(result.seconds * 1000, 2), batch=result.batch,
                           **m.as_dict())


def _encode_and_measure(mask: np.ndarray, frame: Frame) -> tuple[dict[str, Any], Any]:
    rle = encode_rle(mask)
    rle = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"]}
    return rle, measure(mask, frame.spacing_mm, frame.calibration)


EXPORTS = {"coco": ("application/json", "coco.json", exporters.to_coco_bytes),
           "csv": ("text/csv; charset=utf-8", "measurements.csv", exporters.to_csv_bytes),
           "masks": ("application/zip", "masks.zip", exporters.to_png_zip)}


@router.post(UPLOAD_PATH + "/{image_id}/export/{kind}", responses={
    200: {"content": {"application/json": {}, "text/csv": {}, "application/zip": {}}},
    **ERRORS}, response_class=Response, tags=["export"])
async def export(request: Request, body: ExportRequest, image_id: str = ImageId,
                 kind: str = Path(pattern="^(coco|csv|masks)$",
                                  description="coco (JSON, RLE), csv (measurements) or masks "
                                              "(zip of one PNG per object and frame)")
                 ) -> Response:
    """Export named objects, each a list of mask ids this server answered for the image."""
    c = ctx(request)
    image = _image(request, image_id)
    objects = []
    for obj in body.objects:
        records = []
        seen: dict[tuple[int, int], str] = {}
        for mask_id in obj.masks:
            try:
                r = c.store.mask(image, mask_id)
            except NotFound as exc:
                raise ApiError(404, str(exc)) from exc
            if (r.axis, r.frame) in seen:
                raise ApiError(422, f"object {obj.name!r} has two masks on frame {r.frame} "
                                    f"({seen[(r.axis, r.frame)]} and {mask_id}); send one")
            seen[(r.axis, r.frame)] = mask_id
            records.append(r)
        records.sort(key=lambda r: (r.axis, r.frame))
        objects.append(exporters.ExportObject(obj.name, obj.color, tuple(records)))
    media, filename, build = EXPORTS[kind]
    data = await run_in_threadpool(build, image, objects)
    stem = exporters.safe_name(image.name.rsplit(".", 1)[0])
    return Response(data, media_type=media, headers={
        "content-disposition": f'attachment; filename="{stem}.{filename}"'})


MAX_TRACKED_FRAMES = 2_000  # one propagation holds the model thread: keep it bounded


@router.post(UPLOAD_PATH + "/{image_id}/propagate", response_model=PropagateResponse,
             responses=ERRORS, tags=["segment"])
async def propagate(request: Request, body: PropagateRequest,
                    image_id: str = ImageId) -> PropagateResponse:
    """Track one object through the frames of a cine (or the slices of a volume): prompted
    frames are segmented from their prompts, every other frame from its neighbour's mask."""
    c = ctx(request)
    image = _image(request, image_id)
    try:
        c.store.check_frame(image, body.axis, 0)
        n = image.probe.axes[body.axis].frames
        start, stop = body.range if body.range is not None else (0, n)
        if not 0 <= start < stop <= n:
            raise ValueError(f"range must be [start, stop) with 0 <= start < stop <= {n}, "
                             f"got {[start, stop]}")
        if stop - start > MAX_TRACKED_FRAMES:
            raise ValueError(f"{stop - start} frames to track; at most {MAX_TRACKED_FRAMES} "
                             "per request (pass a range)")
        for p in body.prompts:
            c.store.check_frame(image, body.axis, p.frame)
            if not start <= p.frame < stop:
                raise ValueError(f"prompt on frame {p.frame} lies outside the range "
                                 f"[{start}, {stop})")
            if not p.points and p.box is None:
                raise ValueError(f"the prompt on frame {p.frame} has no point and no box")
    except ValueError as exc:
        raise ApiError(422, str(exc)) from exc
    t0 = time.perf_counter()
    try:
        results = await c.worker.run(_track, c.store, image, body, (start, stop))
    except (ValueError, TypeError, KeyError) as exc:
        raise ApiError(422, str(exc).strip("'\"")) from exc
    seconds = time.perf_counter() - t0
    frames = []
    for r in results:
        frame = await _frame(request, image, body.axis, r.frame)
        rle, m = await run_in_threadpool(_encode_and_measure, r.mask, frame)
        record = MaskRecord(new_id(12), body.axis, r.frame, rle, r.score, m)
        c.store.add_mask(image, record)
        frames.append({"mask_id": record.mask_id, "rle": rle, "score": r.score,
                       "frame": r.frame, "axis": body.axis, "embedded": True,
                       "model_ms": 0.0, "flags": list(r.flags), "prompted": r.prompted,
                       **m.as_dict()})
    return PropagateResponse(frames=frames, seconds=round(seconds, 3))


def _track(model: Any, store: ImageStore, image: StoredImage, body: PropagateRequest,
           frame_range: tuple[int, int]) -> list[Any]:
    """Runs on the model thread: a Tracker over the image's frames (decoded through the
    store's LRU), the prompts added, then propagated."""
    from ultrasam.inference.predictor import Predictor
    from ultrasam.inference.tracking import Tracker
    from ultrasam.io.video import FrameSequence

    geometry = image.probe.axes[body.axis]
    frames = FrameSequence(source=image.name, kind="serve", n_frames=geometry.frames,
                           size=(geometry.height, geometry.width),
                           read_frame=lambda k: store.frame(image, body.axis, k).rgb)
    tracker = Tracker(Predictor(model), frames, frame_range=frame_range)
    for p in body.prompts:
        points = [[x, y] for x, y, _ in p.points] or None
        labels = [lab for _, _, lab in p.points] or None
        tracker.add_prompt(p.frame, points=points, labels=labels, box=p.box)
    return tracker.propagate()

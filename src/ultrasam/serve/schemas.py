"""Request and response bodies of the HTTP API (pydantic models; they make the OpenAPI)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Finite = Annotated[float, Field(allow_inf_nan=False)]
Label = Literal[0, 1]


class AxisInfo(BaseModel):
    frames: int
    width: int
    height: int


class ImageInfo(BaseModel):
    """An uploaded image. ``width``/``height``/``frames`` describe axis 0 (frames of a cine,
    slices of a volume along z); ``axes`` lists all three axes of a volume."""

    image_id: str = Field(description="random id (128 bits), unguessable")
    name: str = Field(description="the uploaded file's name, for display only")
    format: str = Field(description="sniffed from content: PNG JPEG TIFF BMP GIF WEBP DICOM "
                                    "NIFTI METAIMAGE")
    kind: Literal["image", "cine", "volume"]
    width: int
    height: int
    frames: int
    default_frame: int = Field(description="frame shown first (middle slice of a volume)")
    spacing_mm: list[float] | None = Field(
        description="[dy, dx]: pixel height and width in mm, or null when not calibrated")
    calibration: Literal["calibrated", "regions", "uncalibrated"] = Field(
        description="'regions': DICOM ultrasound regions with different spacings; each mask "
                    "is measured in mm only when it lies inside one region")
    warnings: list[str]
    axes: list[AxisInfo]


class SegmentRequest(BaseModel):
    """Prompts in image pixels of the requested frame (as ``ultrasam predict``)."""

    model_config = ConfigDict(extra="forbid")

    frame: int = Field(0, ge=0, description="frame of a cine / slice of a volume")
    axis: int = Field(0, ge=0, le=2, description="volume axis (ITK order z, y, x); 0 otherwise")
    points: list[tuple[Finite, Finite, Label]] = Field(
        default_factory=list, max_length=256,
        description="[[x, y, label], ...]: label 1 positive, 0 negative")
    box: tuple[Finite, Finite, Finite, Finite] | None = Field(
        None, description="[x0, y0, x1, y1] or null")
    refine: bool = Field(False, description="UltraSam's two-pass refinement")


class Rle(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="COCO compressed RLE (pycocotools string), column-major")


class SegmentResponse(BaseModel):
    mask_id: str
    rle: Rle
    score: float = Field(description="the model's predicted IoU of the returned mask")
    area_px: int
    area_mm2: float | None = Field(description="null when the frame is not calibrated")
    diameter_px: float = Field(description="largest diameter (max Feret, edge to edge), px")
    diameter_mm: float | None
    calibrated: bool
    note: str | None = Field(description="why mm values are missing, when they are")
    frame: int
    axis: int
    embedded: bool = Field(description="true when this request computed the frame's embedding")
    model_ms: float = Field(description="model time of this request: its decoder call (shared "
                                        "with the batch) plus the embedding if it computed it")
    batch: int = Field(1, description="prompts decoded in the same model call (requests of "
                                      "several users are batched)")


class ExportObject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    color: str = Field("#ff0000", pattern=r"^#[0-9a-fA-F]{6}$")
    masks: list[str] = Field(max_length=20_000, description="mask ids, at most one per frame")


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    objects: list[ExportObject] = Field(min_length=1, max_length=256)


class ModelInfo(BaseModel):
    name: str
    variant: str
    format: str | None
    parameters: int
    img_size: int


class CacheInfo(BaseModel):
    entries: int
    bytes: int
    cap_bytes: int
    hits: int
    misses: int
    evictions: int


class WorkerInfo(BaseModel):
    model_threads: int
    torch_threads: int = Field(description="intra-op threads of each model thread")
    max_batch: int
    precision: Literal["fp32", "bf16"] = Field(
        description="the model's arithmetic (bf16: CPU autocast, see ultrasam serve --help)")


class Health(BaseModel):
    status: Literal["ok"]
    model: ModelInfo
    images: int
    cache: CacheInfo
    worker: WorkerInfo
    limits: dict[str, float]
    tracking: bool = Field(description="whether mask propagation across frames is available")


class Error(BaseModel):
    detail: str


class FramePromptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    frame: int = Field(ge=0)
    points: list[tuple[Finite, Finite, Label]] = Field(default_factory=list, max_length=256)
    box: tuple[Finite, Finite, Finite, Finite] | None = None


class PropagateRequest(BaseModel):
    """Prompts of one object on some frames; every other frame of ``range`` gets its mask by
    propagation from the nearest prompted frame (:mod:`ultrasam.inference.tracking`)."""

    model_config = ConfigDict(extra="forbid")

    axis: int = Field(0, ge=0, le=2)
    prompts: list[FramePromptIn] = Field(min_length=1, max_length=64)
    range: tuple[int, int] | None = Field(
        None, description="[start, stop) frames to track (default: all)")


class TrackedFrame(SegmentResponse):
    flags: list[str] = Field(description="quality flags: low_score, area_jump, empty")
    prompted: bool


class PropagateResponse(BaseModel):
    frames: list[TrackedFrame]
    seconds: float

"""Track objects through a cine loop or volume: prompt a few frames, segment every frame.

Built on :class:`ultrasam.inference.predictor.Predictor` only (``set_image`` / ``predict`` /
``get_image_embedding`` / ``set_image_embedding``), so it works with every checkpoint format.

How a sequence is segmented, for each named object:

1. **Prompted frames** are segmented from the user's points and/or box (a single point asks
   for SAM's three candidate masks and keeps the best-scored one).
2. **Every other frame takes its mask from the nearest prompted frame** (ties go to the earlier
   one): propagation runs forward and backward from each prompted frame, one frame at a time,
   until it meets the territory of the next prompted frame or the end of the range.
3. **Carry**: frame ``t`` is prompted with what frame ``t -/+ 1`` found: its low-resolution
   logits as the mask prompt, the box of its mask widened by ``box_margin``, and, optionally,
   its interior-most point (the maximum of the distance transform), all with
   ``multimask_output=False``. With ``motion=True`` (default) all three are first moved by the
   object's displacement between the two frames, estimated by normalised cross-correlation of
   the previous box's content (speckle smoothed away) over a window around it
   (:func:`estimate_shift`): a prompt left where the object *was* makes the model segment the
   stale box, and the mask lags and swells frame after frame. A frame whose mask came out
   empty is never carried; the last non-empty mask is used instead, so one dropout frame does
   not end the track.
4. **Quality signal** per frame: the model's predicted IoU (``score``) and the area change
   against the last non-empty frame, ``|a_t - a_prev| / a_prev``. A frame is flagged
   ``low_score``, ``area_jump`` or ``empty`` by :func:`quality_flags`; with
   ``on_drift="stop"`` propagation in that direction ends at the first flagged frame (the
   flagged frame is kept, later frames are left untracked) instead of following the drift.
5. **Corrections**: :meth:`Tracker.add_prompt` on any frame replaces that frame's prompt; a
   correction without a box starts from the mask the frame already holds (its logits are the
   mask prompt: SAM's interactive refinement). :meth:`Tracker.propagate` then recomputes only
   the frames whose result depended on a changed prompt; every other result is kept.

Embeddings are cached per frame (least recently used, ``cache_frames`` of them), so
scrubbing back and forth, re-propagating after a correction or tracking several objects
encodes each frame once. The tracker sets images on its predictor: do not use that predictor
for anything else while tracking.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

from ultrasam.inference.predictor import Predictor
from ultrasam.io.video import FrameSequence

log = logging.getLogger(__name__)

DriftPolicy = Literal["flag", "stop"]


@dataclass(frozen=True)
class TrackerConfig:
    """How masks are carried between frames and when a frame is flagged.

    Attributes:
        carry_logits: previous frame's low-res logits as the mask prompt.
        carry_box: previous mask's box, widened by ``box_margin`` of its width/height per side.
        carry_point: previous mask's interior-most point as a positive click.
        motion: move the carried prompts by the displacement :func:`estimate_shift` measures.
        box_margin: fraction of the box size added on each side (negative shrinks it). 0 by
            default: the model fills the box it is given, so any margin compounds from frame to
            frame (+5 % per side swelled a tracked cyst 3.5-fold in 12 frames with the default
            model's architecture); motion is handled by ``motion`` instead.
        min_score: frames whose predicted IoU is below this are flagged ``low_score``.
        max_area_change: frames whose area changes by more than this fraction of the last
            non-empty frame's area are flagged ``area_jump``.
        on_drift: ``"flag"`` (keep going, mark the frame) or ``"stop"`` (end this direction).
        cache_frames: embeddings kept (least recently used evicted); at least 1.
    """

    carry_logits: bool = True
    carry_box: bool = True
    carry_point: bool = False
    motion: bool = True
    box_margin: float = 0.0
    min_score: float = 0.5
    max_area_change: float = 0.5
    on_drift: DriftPolicy = "flag"
    cache_frames: int = 64

    def __post_init__(self) -> None:
        if not (self.carry_logits or self.carry_box or self.carry_point):
            raise ValueError("the tracker must carry something between frames: enable "
                             "carry_logits, carry_box or carry_point")
        if not -0.25 <= self.box_margin <= 2.0:
            raise ValueError(f"box_margin must be in [-0.25, 2], got {self.box_margin}")
        if not self.max_area_change > 0:
            raise ValueError(f"max_area_change must be > 0, got {self.max_area_change}")
        if self.on_drift not in ("flag", "stop"):
            raise ValueError(f"on_drift must be 'flag' or 'stop', got {self.on_drift!r}")
        if isinstance(self.cache_frames, bool) or not isinstance(self.cache_frames, int) \
                or self.cache_frames < 1:
            raise ValueError(f"cache_frames must be an int >= 1, got {self.cache_frames!r}")


@dataclass(frozen=True)
class FramePrompt:
    """A user prompt on one frame, in the frame's pixels.

    points: N x 2 xy; labels: N (1 foreground, 0 background); box: 4 XYXY; mask_input:
    1 x L x L low-res logits the prompt starts from (a correction of a tracked mask).
    """

    frame: int
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask_input: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class FrameResult:
    """One object on one frame.

    mask: H x W bool; score: predicted IoU; area_change: ``|a - a_prev| / a_prev`` against the
    last non-empty frame on the way from ``source`` (``None`` on prompted frames); flags: see
    :func:`quality_flags`; source: the prompted frame this result was propagated from.
    """

    name: str
    frame: int
    mask: np.ndarray = field(repr=False)
    score: float
    area_px: int
    area_change: float | None
    flags: tuple[str, ...]
    prompted: bool
    source: int

    @property
    def flagged(self) -> bool:
        return bool(self.flags)


@dataclass
class TrackerStats:
    """Work done so far: frames encoded, embedding cache hits, decoder calls and their time."""

    encoded: int = 0
    cache_hits: int = 0
    decoded: int = 0
    encode_s: float = 0.0
    decode_s: float = 0.0


@dataclass
class _Entry:
    result: FrameResult
    logits: np.ndarray  # 1 x L x L low-res logits, the mask prompt for the next frame
    version: int  # version of the source prompt it was computed from


def quality_flags(score: float, area: int, prev_area: int | None,
                  config: TrackerConfig) -> tuple[tuple[str, ...], float | None]:
    """Flags of one frame and its area change (``None`` without a previous area).

    ``empty``: no mask pixel; ``low_score``: predicted IoU below ``config.min_score``;
    ``area_jump``: ``|area - prev_area| / prev_area`` above ``config.max_area_change``.
    """
    flags: list[str] = []
    change = None if not prev_area else abs(area - prev_area) / prev_area
    if area == 0:
        flags.append("empty")
    if score < config.min_score:
        flags.append("low_score")
    if area > 0 and change is not None and change > config.max_area_change:
        flags.append("area_jump")
    return tuple(flags), change


def mask_box(mask: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """XYXY box of an H x W bool mask (x1, y1 exclusive), widened by ``margin`` x its size
    on each side and clipped to the image."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("mask is empty: it has no box")
    x0, y0, x1, y1 = float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    h, w = mask.shape
    return np.array([max(0.0, x0 - mx), max(0.0, y0 - my), min(float(w), x1 + mx),
                     min(float(h), y1 + my)])


def estimate_shift(prev: np.ndarray, cur: np.ndarray, box: np.ndarray,
                   search: float = 0.5) -> tuple[float, float]:
    """Displacement ``(dx, dy)`` in pixels of the content of ``box`` from ``prev`` to ``cur``.

    prev, cur: H x W float32 grey frames (smoothed; see :meth:`Tracker._grey`); box: XYXY in
    ``prev``. The box's patch is matched by normalised cross-correlation over ``cur`` within the
    box widened by ``search`` x its size per side; ``(0, 0)`` when the box is too small or the
    window too close to the image edge to search.
    """
    h, w = prev.shape
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    bw, bh = x1 - x0, y1 - y0
    if bw < 4 or bh < 4:
        return 0.0, 0.0
    sx, sy = int(np.ceil(search * bw)), int(np.ceil(search * bh))
    wx0, wy0, wx1, wy1 = max(0, x0 - sx), max(0, y0 - sy), min(w, x1 + sx), min(h, y1 + sy)
    if wx1 - wx0 <= bw or wy1 - wy0 <= bh:
        return 0.0, 0.0
    score = cv2.matchTemplate(cur[wy0:wy1, wx0:wx1], prev[y0:y1, x0:x1], cv2.TM_CCOEFF_NORMED)
    _, _, _, (mx, my) = cv2.minMaxLoc(score)
    return float(wx0 + mx - x0), float(wy0 + my - y0)


def shift_logits(logits: np.ndarray, dx: float, dy: float, image_hw: tuple[int, int]
                 ) -> np.ndarray:
    """Move 1 x L x L low-res logits by ``(dx, dy)`` image pixels (background fills in)."""
    scale = logits.shape[-1] / max(image_hw)  # low-res cells per image pixel
    matrix = np.float32([[1, 0, dx * scale], [0, 1, dy * scale]])
    moved = cv2.warpAffine(logits[0].astype(np.float32), matrix, logits.shape[-2:][::-1],
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=float(logits.min()))
    return moved[None]


def interior_point(mask: np.ndarray) -> np.ndarray:
    """``(x, y)`` centre of the mask pixel farthest from the mask's border (1 x 2)."""
    padded = np.pad(mask.astype(np.uint8), 1)  # the image edge counts as border too
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([[col + 0.5, row + 0.5]])


class Tracker:
    """Prompt objects on some frames of a sequence and propagate them to the others.

    Args:
        predictor: a :class:`~ultrasam.inference.predictor.Predictor` (any checkpoint); the tracker
            owns it while tracking.
        frames: a :class:`~ultrasam.io.video.FrameSequence` (see
            :func:`ultrasam.io.video.open_frames`), a list of images or an N x H x W [x 3]
            array.
        config: :class:`TrackerConfig` (defaults when ``None``).
        frame_range: ``(start, stop)``, half-open: only frames ``start <= k < stop`` are
            prompted and tracked (default: all).
    """

    def __init__(self, predictor: Predictor,
                 frames: FrameSequence | Sequence[np.ndarray] | np.ndarray,
                 config: TrackerConfig | None = None,
                 frame_range: tuple[int, int] | None = None) -> None:
        if not isinstance(predictor, Predictor):
            raise TypeError(f"predictor must be an ultrasam Predictor, got "
                            f"{type(predictor).__name__}")
        self.predictor = predictor
        self.frames = frames if isinstance(frames, FrameSequence) \
            else FrameSequence.from_arrays(frames)
        self.config = config or TrackerConfig()
        n = len(self.frames)
        start, stop = frame_range if frame_range is not None else (0, n)
        if not (isinstance(start, (int, np.integer)) and isinstance(stop, (int, np.integer))
                and 0 <= start < stop <= n):
            raise ValueError(f"frame_range must be (start, stop) with 0 <= start < stop <= {n}, "
                             f"got {frame_range!r}")
        self.frame_range = (int(start), int(stop))
        self.stats = TrackerStats()
        self._cache: OrderedDict[int, tuple[Any, tuple[int, int]]] = OrderedDict()
        self._current: int | None = None
        self._greys: OrderedDict[int, np.ndarray] = OrderedDict()
        self._version = 0
        self._prompts: dict[str, dict[int, tuple[FramePrompt, int]]] = {}
        self._entries: dict[str, dict[int, _Entry]] = {}

    # ------------------------------------------------------------------------ prompts
    @property
    def names(self) -> list[str]:
        """Object names, in the order they were first prompted."""
        return list(self._prompts)

    def prompts(self, name: str = "object") -> list[FramePrompt]:
        """The prompts of one object, by frame."""
        return [p for _, (p, _v) in sorted(self._prompts.get(name, {}).items())]

    def add_prompt(self, frame: int, points: np.ndarray | Sequence[Sequence[float]] | None = None,
                   labels: np.ndarray | Sequence[int] | None = None,
                   box: np.ndarray | Sequence[float] | None = None,
                   name: str = "object") -> FrameResult:
        """Prompt object ``name`` on ``frame`` (replacing an earlier prompt there) and return
        that frame's new result; call :meth:`propagate` to update the other frames.

        points: N x 2 xy pixels; labels: N (1 foreground, 0 background; default all 1);
        box: XYXY pixels. Without a box, a frame that already holds a mask of this object
        starts from it (its logits as mask prompt), so points act as corrections.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"object name must be a non-empty string, got {name!r}")
        k = self._check_frame(frame)
        pts = lab = None
        if points is not None:
            pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
            lab = (np.ones(len(pts), dtype=np.int64) if labels is None
                   else np.asarray(labels, dtype=np.int64).reshape(-1))
        elif labels is not None:
            raise ValueError("labels given without points")
        b = None if box is None else np.asarray(box, dtype=np.float64).reshape(-1)
        if pts is None and b is None:
            raise ValueError("a prompt needs points or a box")
        current = self._entries.get(name, {}).get(k)
        start = current.logits if current is not None and b is None else None
        prompt = FramePrompt(k, pts, lab, b, start)
        self._version += 1
        previous = self._prompts.setdefault(name, {}).get(k)
        self._prompts[name][k] = (prompt, self._version)
        self._entries.setdefault(name, {})
        try:
            return self._segment_prompted(name, prompt, self._version).result
        except (ValueError, TypeError):  # an invalid prompt (outside the image, ...): undo
            if previous is None:
                del self._prompts[name][k]
                if not self._prompts[name]:
                    del self._prompts[name]
            else:
                self._prompts[name][k] = previous
            raise

    def remove_prompt(self, frame: int, name: str = "object") -> None:
        """Remove the prompt of ``name`` on ``frame``; :meth:`propagate` re-assigns its frames."""
        if frame not in self._prompts.get(name, {}):
            raise KeyError(f"object {name!r} has no prompt on frame {frame}")
        del self._prompts[name][frame]
        if not self._prompts[name]:
            del self._prompts[name]
            self._entries.pop(name, None)

    # -------------------------------------------------------------------- propagation
    def propagate(self, name: str | None = None,
                  on_frame: Callable[[FrameResult], None] | None = None) -> list[FrameResult]:
        """Segment every frame of the range for object ``name`` (all objects when ``None``).

        Results still valid from an earlier call are kept; ``on_frame`` is called with each
        newly computed result, in processing order. Returns all results by (object, frame).
        """
        names = self.names if name is None else [name]
        for obj in names:
            if obj not in self._prompts:
                raise KeyError(f"no prompt for object {obj!r}; objects: {self.names}")
            self._propagate_object(obj, on_frame)
        return [r for obj in names for r in self.results(obj)]

    def results(self, name: str = "object") -> list[FrameResult]:
        """Current results of one object, by frame (untracked frames are absent)."""
        return [e.result for _, e in sorted(self._entries.get(name, {}).items())]

    def result(self, frame: int, name: str = "object") -> FrameResult | None:
        entry = self._entries.get(name, {}).get(frame)
        return entry.result if entry is not None else None

    def _segments(self, name: str) -> list[tuple[int, int, int]]:
        """(prompted frame, first, last) of the frames each prompt is nearest to."""
        start, stop = self.frame_range
        keys = sorted(self._prompts[name])
        out = []
        for i, p in enumerate(keys):
            lo = start if i == 0 else (keys[i - 1] + p) // 2 + 1
            hi = stop - 1 if i == len(keys) - 1 else (p + keys[i + 1]) // 2
            out.append((p, lo, hi))
        return out

    def _propagate_object(self, name: str, on_frame: Callable[[FrameResult], None] | None
                          ) -> None:
        entries = self._entries.setdefault(name, {})
        reached: set[int] = set()
        for p, lo, hi in self._segments(name):
            prompt, version = self._prompts[name][p]
            head = entries.get(p)
            if head is None or not self._valid(head, p, version):
                head = self._segment_prompted(name, prompt, version)
                if on_frame is not None:
                    on_frame(head.result)
            reached.add(p)
            for order in (range(p + 1, hi + 1), range(p - 1, lo - 1, -1)):
                reached.update(self._run_chain(name, head, version, order, on_frame))
        for k in [k for k in entries if k not in reached]:
            del entries[k]  # stale: its prompt moved, or propagation now stops before it

    def _run_chain(self, name: str, head: _Entry, version: int, order: range,
                   on_frame: Callable[[FrameResult], None] | None) -> list[int]:
        """Propagate from ``head`` through ``order``; returns the frames that hold a result."""
        entries = self._entries[name]
        source = head.result.frame
        carry = head if head.result.area_px > 0 else None
        done = []
        if self.config.on_drift == "stop" and head.result.flagged:
            return done
        for k in order:
            entry = entries.get(k)
            if entry is None or not self._valid(entry, source, version):
                if carry is None:
                    break  # nothing left to follow: every mask so far was empty
                entry = self._segment_carried(name, k, carry, source, version)
                entries[k] = entry
                if on_frame is not None:
                    on_frame(entry.result)
            done.append(k)
            if entry.result.area_px > 0:
                carry = entry
            if self.config.on_drift == "stop" and entry.result.flagged:
                break
        return done

    @staticmethod
    def _valid(entry: _Entry, source: int, version: int) -> bool:
        return entry.result.source == source and entry.version == version

    # ---------------------------------------------------------------------- decoding
    def _segment_prompted(self, name: str, prompt: FramePrompt, version: int) -> _Entry:
        self._set_frame(prompt.frame)
        single_point = prompt.box is None and prompt.points is not None \
            and len(prompt.points) == 1 and prompt.mask_input is None
        masks, scores, logits = self._predict(prompt.points, prompt.labels, prompt.box,
                                              prompt.mask_input, multimask=single_point)
        best = int(np.argmax(scores))
        mask = masks[best]
        area = int(mask.sum())
        flags, _ = quality_flags(float(scores[best]), area, None, self.config)
        result = FrameResult(name, prompt.frame, mask, float(scores[best]), area, None, flags,
                             True, prompt.frame)
        entry = _Entry(result, logits[best:best + 1], version)
        self._entries[name][prompt.frame] = entry
        return entry

    def _segment_carried(self, name: str, frame: int, carry: _Entry, source: int,
                         version: int) -> _Entry:
        cfg = self.config
        prev = carry.result.mask
        dx = dy = 0.0
        if cfg.motion:
            dx, dy = estimate_shift(self._grey(carry.result.frame), self._grey(frame),
                                    mask_box(prev))
        h, w = prev.shape
        points = labels = box = logits = None
        if cfg.carry_point:
            points = interior_point(prev) + [dx, dy]
            points = np.clip(points, 0, [w, h])
            labels = np.ones(1, dtype=np.int64)
        if cfg.carry_box:
            box = mask_box(prev, cfg.box_margin) + [dx, dy, dx, dy]
            box = np.clip(box, 0, [w, h, w, h])
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                box = None  # moved off the image: the other carried prompts remain
        if cfg.carry_logits:
            logits = carry.logits if dx == dy == 0 else shift_logits(carry.logits, dx, dy,
                                                                      (h, w))
        if points is None and box is None and logits is None:
            logits = carry.logits
        self._set_frame(frame)
        masks, scores, low = self._predict(points, labels, box, logits, multimask=False)
        mask = masks[0]
        area = int(mask.sum())
        flags, change = quality_flags(float(scores[0]), area, carry.result.area_px, cfg)
        result = FrameResult(name, frame, mask, float(scores[0]), area, change, flags, False,
                             source)
        return _Entry(result, low[0:1], version)

    def _predict(self, points: np.ndarray | None, labels: np.ndarray | None,
                 box: np.ndarray | None, mask_input: np.ndarray | None, multimask: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        out = self.predictor.predict(point_coords=points, point_labels=labels, box=box,
                                     mask_input=mask_input, multimask_output=multimask)
        self.stats.decoded += 1
        self.stats.decode_s += time.perf_counter() - t0
        return out

    # ----------------------------------------------------------------- frames, embeddings
    def _grey(self, k: int) -> np.ndarray:
        """Frame ``k`` as smoothed float32 grey for motion estimation (a few are kept)."""
        grey = self._greys.get(k)
        if grey is None:
            rgb = self.frames[k]
            # Speckle is noise to the matcher: smooth it to the scale of the structures.
            sigma = max(1.0, max(rgb.shape[:2]) / 200)
            grey = cv2.GaussianBlur(rgb.mean(axis=2, dtype=np.float32), (0, 0), sigma)
            self._greys[k] = grey
            while len(self._greys) > 4:
                self._greys.popitem(last=False)
        return grey

    def _set_frame(self, k: int) -> None:
        """Make frame ``k`` the predictor's image, from the cache when possible."""
        cached = self._cache.get(k)
        if cached is not None:
            self._cache.move_to_end(k)
            if self._current == k and self.predictor.is_image_set \
                    and self.predictor.get_image_embedding() is cached[0]:
                return
            self.predictor.set_image_embedding(cached[0], cached[1])
            self.stats.cache_hits += 1
        else:
            rgb = self.frames[k]
            t0 = time.perf_counter()
            self.predictor.set_image(rgb)
            self.stats.encoded += 1
            self.stats.encode_s += time.perf_counter() - t0
            size = self.predictor.original_size
            assert size is not None
            self._cache[k] = (self.predictor.get_image_embedding(), size)
            while len(self._cache) > self.config.cache_frames:
                self._cache.popitem(last=False)
        self._current = k

    def _check_frame(self, frame: int) -> int:
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
            raise TypeError(f"frame must be an int, got {type(frame).__name__}")
        start, stop = self.frame_range
        if not start <= int(frame) < stop:
            raise ValueError(f"frame {frame} is outside the tracked range {start}..{stop - 1}")
        return int(frame)

"""Prompts of one object, and their text forms (command line and manifest cells).

Coordinates are original-image pixels: points N x 2 xy with labels N (1 foreground,
0 background), box XYXY; ``mask`` is the path of a binary mask image of the image's size (any
non-zero pixel is foreground) used as SAM's mask prompt.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Prompt:
    """The prompts of one object in original-image pixels (see the module docstring)."""

    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None
    mask: str | None = None

    def is_empty(self) -> bool:
        return not self.points and self.box is None and self.mask is None

    def as_dict(self) -> dict[str, Any]:
        """JSON form, as stored in records (``mask`` only when given)."""
        d: dict[str, Any] = {"points": [list(p) for p in self.points], "labels": list(self.labels),
                             "box": list(self.box) if self.box is not None else None}
        if self.mask is not None:
            d["mask"] = self.mask
        return d


def _finite(values: list[float], what: str, text: str) -> None:
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} {text!r}: coordinates must be finite numbers")


def parse_point(text: str) -> tuple[float, float, int]:
    """"X,Y" or "X,Y,LABEL" (LABEL 1 foreground, 0 background) -> (x, y, label)."""
    parts = text.split(",")
    if len(parts) not in (2, 3):
        raise ValueError(f"--point expects X,Y or X,Y,LABEL, got {text!r}")
    try:
        x, y = float(parts[0]), float(parts[1])
        label = int(parts[2]) if len(parts) == 3 else 1
    except ValueError as e:
        raise ValueError(f"--point {text!r}: {e}") from e
    _finite([x, y], "--point", text)
    if label not in (0, 1):
        raise ValueError(f"--point {text!r}: label must be 1 (foreground) or 0 (background)")
    return x, y, label


def parse_box(text: str) -> tuple[float, float, float, float]:
    """"X0,Y0,X1,Y1" -> a box (validated against the image later, by the predictor)."""
    parts = text.split(",")
    if len(parts) != 4:
        raise ValueError(f"--box expects X0,Y0,X1,Y1, got {text!r}")
    try:
        x0, y0, x1, y1 = (float(p) for p in parts)
    except ValueError as e:
        raise ValueError(f"--box {text!r}: {e}") from e
    _finite([x0, y0, x1, y1], "--box", text)
    return x0, y0, x1, y1


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{what}: expected a number, got {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"{what}: expected a finite number, got {v!r}")
    return float(v)


def _json_cell(value: Any) -> Any:
    """A manifest cell: JSON text in a CSV (``"[[10, 20]]"``) or already a JSON value."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON: {value!r} ({e.msg})") from e
    return value


def prompt_from_fields(points: Any = None, labels: Any = None, box: Any = None,
                       mask: str | None = None) -> Prompt:
    """One object's prompt from manifest fields.

    ``points``: ``[[x, y], ...]`` or ``[[x, y, label], ...]`` (JSON), or ``"x,y[,l];x,y[,l]"``
    (CSV-friendly); ``labels``: ``[1, 0]`` or ``"1;0"`` (default: all 1, unless the points carry
    their labels); ``box``: ``[x0, y0, x1, y1]`` or ``"x0,y0,x1,y1"``; ``mask``: a path.
    """
    prompt = Prompt(mask=mask or None)
    points = _json_cell(points)
    if isinstance(points, str) and points.strip():
        parsed = [parse_point(p.strip()) for p in points.split(";") if p.strip()]
        points = [[x, y, lab] for x, y, lab in parsed]
    if points not in (None, "", []):
        if not isinstance(points, list) or not all(isinstance(p, list) for p in points):
            raise ValueError(f"points must be a list of [x, y] or [x, y, label], got {points!r}")
        inline_labels = []
        for p in points:
            if len(p) not in (2, 3):
                raise ValueError(f"a point must be [x, y] or [x, y, label], got {p!r}")
            prompt.points.append((_number(p[0], "point x"), _number(p[1], "point y")))
            inline_labels.append(p[2] if len(p) == 3 else 1)
        labels = _json_cell(labels)
        if isinstance(labels, str) and labels.strip():
            try:
                labels = [int(v) for v in labels.replace(",", ";").split(";") if v.strip()]
            except ValueError as e:
                raise ValueError(f"labels must be integers 0/1, got {labels!r}") from e
        if labels in (None, "", []):
            labels = inline_labels
        if not isinstance(labels, list) or len(labels) != len(prompt.points):
            raise ValueError(f"labels {labels!r} must give one label per point "
                             f"({len(prompt.points)} points)")
        for lab in labels:
            if isinstance(lab, bool) or lab not in (0, 1):
                raise ValueError(f"point labels must be 1 (foreground) or 0 (background), "
                                 f"got {lab!r}")
        prompt.labels = [int(v) for v in labels]
    elif labels not in (None, "", []):
        raise ValueError("labels given without points")
    box = _json_cell(box)
    if isinstance(box, str) and box.strip():
        prompt.box = parse_box(box)
    elif box not in (None, "", []):
        if not isinstance(box, list) or len(box) != 4:
            raise ValueError(f"box must be [x0, y0, x1, y1], got {box!r}")
        x0, y0, x1, y1 = (_number(v, "box") for v in box)
        prompt.box = (x0, y0, x1, y1)
    return prompt

"""``ultrasam track``: prompt a cine / volume / video / folder of frames once, segment every
frame, measure over time.

Prompts are read in command-line order: ``--name N`` starts an object (default name
``object``), ``--frame K`` starts a prompt on frame K for the current object, and ``--box`` /
``--point`` add to the current prompt. Example with two objects::

    ultrasam track cine.dcm --name lv --frame 0 --box 80,60,160,150 --frame 20 --point 120,100 \\
        --name la --frame 0 --box 90,150,150,200 --out tracked/
"""

from __future__ import annotations

import argparse
from typing import Any

FORMATS = ("sam", "medsam", "ultrasam", "native")


class _InOrder(argparse.Action):
    """Records (option, value) pairs in command-line order in ``namespace.prompt_items``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        items = list(getattr(namespace, "prompt_items", None) or [])
        items.append((self.dest, values))
        namespace.prompt_items = items


def parse_objects(items: list[tuple[str, str]]) -> list[Any]:
    """Ordered ``(option, text)`` pairs -> :class:`~ultrasam.inference.track_files.ObjectSpec`s."""
    from ..inference.predict_files import parse_box, parse_point
    from ..inference.track_files import ObjectSpec, PromptSpec

    objects: list[ObjectSpec] = []
    for option, text in items:
        if option == "name":
            objects.append(ObjectSpec(text))
            continue
        if not objects:
            objects.append(ObjectSpec("object"))
        obj = objects[-1]
        if option == "frame":
            try:
                frame = int(text)
            except ValueError as e:
                raise ValueError(f"--frame expects an integer, got {text!r}") from e
            obj.prompts.append(PromptSpec(frame))
            continue
        if not obj.prompts:
            raise ValueError(f"--{option} {text} comes before any --frame K: say which frame "
                             "the prompt is on first")
        prompt = obj.prompts[-1]
        if option == "box":
            if prompt.box is not None:
                raise ValueError(f"object {obj.name!r}, frame {prompt.frame}: one --box per "
                                 "prompt")
            prompt.box = parse_box(text)
        else:
            x, y, label = parse_point(text)
            prompt.points.append((x, y))
            prompt.labels.append(label)
    return objects


def parse_range(text: str | None) -> tuple[int | None, int | None] | None:
    """``"A:B"`` (half-open, either side optional) -> ``(A, B)``."""
    if text is None:
        return None
    parts = text.split(":")
    if len(parts) != 2:
        raise ValueError(f"--range expects A:B (frames A..B-1), got {text!r}")
    try:
        return tuple(int(p) if p.strip() else None for p in parts)  # type: ignore[return-value]
    except ValueError as e:
        raise ValueError(f"--range {text!r}: {e}") from e


def _pair(text: str | None, option: str) -> tuple[float, float] | None:
    if text is None:
        return None
    parts = text.split(",")
    try:
        a, b = (float(p) for p in parts)
    except ValueError as e:
        raise ValueError(f"{option} expects ROW_MM,COL_MM, got {text!r}") from e
    return a, b


def _track(args: argparse.Namespace) -> int:
    from ..inference.track_files import track_file
    from ..inference.tracking import TrackerConfig

    objects = parse_objects(getattr(args, "prompt_items", None) or [])
    # Only the options given on the command line: the library's defaults are the defaults.
    chosen = {key: getattr(args, key) for key in ("carry_point", "motion", "box_margin",
                                                  "min_score", "max_area_change", "on_drift")
              if getattr(args, key) is not None}
    config = TrackerConfig(**chosen)
    summary = track_file(args.input, args.out, objects, checkpoint=args.checkpoint,
                         format=args.format, device=args.device,
                         frame_range=parse_range(args.range), axis=args.axis, fps=args.fps,
                         spacing_mm=_pair(args.spacing, "--spacing"), config=config,
                         overlays=args.overlays)
    for name, obj in summary["objects"].items():
        area = obj["area_mm2"] or obj["area_px"]
        unit = "mm2" if obj["area_mm2"] else "px"
        fac = area["fractional_area_change"]
        print(f"{name}: {obj['frames_tracked']} frames, area {area['min']:.4g}-"
              f"{area['max']:.4g} {unit}, FAC {fac if fac is None else round(fac, 3)}, "
              f"{len(obj['frames_flagged'])} flagged")
    print(f"wrote {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "track", help="segment every frame of a cine / volume / video from prompts on a few "
                      "frames, and measure over time",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="multi-frame DICOM, NIfTI/MetaImage volume, video file "
                                 "(MP4/AVI) or a folder of frame images (natural name order)")
    p.add_argument("--name", action=_InOrder, help="start a new named object")
    p.add_argument("--frame", action=_InOrder, metavar="K",
                   help="start a prompt on frame K (0-based) for the current object")
    p.add_argument("--box", action=_InOrder, metavar="X0,Y0,X1,Y1", help="box prompt (pixels)")
    p.add_argument("--point", action=_InOrder, metavar="X,Y[,LABEL]",
                   help="point prompt (pixels); LABEL 1 foreground (default) or 0 background")
    p.add_argument("--range", metavar="A:B", help="track frames A..B-1 only")
    p.add_argument("--axis", type=int, default=0,
                   help="volume axis the frames run along (0 = z, 1 = y, 2 = x; ITK order)")
    p.add_argument("--fps", type=float, help="frame rate for inputs without timing (or to "
                                             "override the file's)")
    p.add_argument("--spacing", metavar="ROW_MM,COL_MM",
                   help="pixel size for inputs without calibration (or to override it)")
    p.add_argument("--checkpoint", help="checkpoint file or native folder (default: bundled)")
    p.add_argument("--format", choices=FORMATS, help="checkpoint format (default: detected)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--carry-point", action="store_true", default=None,
                   help="also carry the previous mask's interior-most point between frames")
    p.add_argument("--box-margin", type=float,
                   help="widen (or, negative, shrink) the carried box by this fraction per "
                        "side (default 0: the model fills the box it is given)")
    p.add_argument("--no-motion", dest="motion", action="store_false", default=None,
                   help="do not move the carried prompts by the measured frame-to-frame "
                        "displacement")
    p.add_argument("--min-score", type=float,
                   help="flag frames whose predicted IoU is below this")
    p.add_argument("--max-area-change", type=float,
                   help="flag frames whose area changes by more than this fraction")
    p.add_argument("--on-drift", choices=("flag", "stop"),
                   help="on a flagged frame: mark it and go on (flag, default), or stop that "
                        "direction")
    p.add_argument("--overlays", action="store_true", help="also write overlay PNGs per frame")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_track)

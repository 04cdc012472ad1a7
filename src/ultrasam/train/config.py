"""Training configuration: frozen dataclasses loaded from YAML plus ``key=value`` overrides.

A config file mirrors the sections below (``model``, ``data``, ``prompts``, ``augment``,
``loss``, ``optim``, ``schedule``, ``run``); every key is optional and defaults to the value
here. Overrides use dotted keys (``optim.lr=3e-4``, ``data.weights.TG3K=0.5``) and YAML values.
Unknown keys and values of the wrong type raise ``ValueError`` naming the dotted key, so a typo
never silently trains something else.

Relative paths are resolved against the current working directory when the run starts.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .augment import AugmentParams


@dataclass(frozen=True)
class ModelSection:
    """Which network to train and which of its parts move.

    ``checkpoint``: any file or folder ``ultrasam.weights.checkpoints.load_model`` accepts (SAM,
    MedSAM, UltraSam, native); None builds ``variant`` with ``overrides`` from scratch.
    ``freeze_encoder``: the image encoder is not trained (run under ``no_grad``).
    ``lora_rank`` > 0: the encoder is frozen except low-rank adapters on every attention
    ``qkv`` projection (scaled by ``lora_alpha / lora_rank``); they are merged back into the
    plain weights on export.
    """

    variant: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    checkpoint_format: str = "auto"
    freeze_encoder: bool = False
    lora_rank: int = 0
    lora_alpha: float = 1.0


@dataclass(frozen=True)
class DataSection:
    """Images, instances and batching.

    ``paths``: corpus roots (one sub-folder per dataset with ``annotations.coco.json``), single
    dataset folders or COCO JSON files. ``datasets``: keep only these dataset names (empty: all).
    ``exclude``: ``"DATASET:split"`` or ``"DATASET"`` entries never trained on (the development
    benchmark, MMOTU_2d val, by default). ``weights``: per-dataset multiplier of its natural
    sampling frequency (1 = proportional to its number of usable images, 0 = left out).
    ``min_instance_area``: instances smaller than this (pixels at the stored size, and again
    after resizing to the model input) are not prompted.
    """

    paths: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ("MMOTU_2d:val",)
    split: str | None = None
    weights: dict[str, float] = field(default_factory=dict)
    images_per_batch: int = 4
    max_instances: int = 20
    min_instance_area: int = 12
    epoch_size: int = 0
    load_threads: int = 0


@dataclass(frozen=True)
class PromptSection:
    """Prompt simulation (see ``ultrasam.train.prompts``).

    Per instance: a box with probability ``p_box`` (else points). Point prompts have one
    positive point, or with probability ``p_multi_point`` 1..``max_positive`` positives and
    0..``max_negative`` negatives. ``box_jitter``: each box coordinate moves by U(-j, j) x the
    box side. ``p_ellipse_mask``: box prompts also get the box's inscribed ellipse as mask
    prompt (``ellipse_logit`` inside, minus outside). ``refine``: a second pass with the first
    pass's logits as mask prompt (not detached) and, for point prompts, the box of the first
    mask in place of the points. ``click_iterations``: further passes each adding one
    corrective click sampled from the previous error region.
    """

    p_box: float = 0.5
    box_jitter: float = 0.05
    p_multi_point: float = 0.0
    max_positive: int = 3
    max_negative: int = 2
    p_ellipse_mask: float = 0.0
    ellipse_logit: float = 4.0
    refine: bool = True
    click_iterations: int = 0


# The augment section is the augmentation's own parameter set (one definition, in augment.py).
AugmentSection = AugmentParams


@dataclass(frozen=True)
class LossSection:
    """Loss = focal_weight x focal + dice_weight x dice + iou_weight x MSE(IoU).

    ``iou_on``: the IoU regression is applied to the best output only (``best``, the
    reference) or to every output (``all``, which trains the IoU head to rank them).
    """

    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    iou_on: Literal["best", "all"] = "best"


@dataclass(frozen=True)
class OptimSection:
    lr: float = 1e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad_norm: float = 0.1
    accumulate: int = 1


@dataclass(frozen=True)
class ScheduleSection:
    """Linear warm-up from ``warmup_factor`` x lr, then ``step`` decay (x ``gamma`` at each
    milestone) or ``cosine`` decay to ``min_factor`` x lr at the last step."""

    kind: Literal["step", "cosine", "constant"] = "step"
    warmup_steps: int = 500
    warmup_factor: float = 0.001
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    min_factor: float = 0.0


@dataclass(frozen=True)
class RunSection:
    """Where, how long and how a run goes.

    ``resume``: ``auto`` continues from the newest checkpoint in ``out_dir/checkpoints`` when one
    exists, ``never`` starts afresh, any other value is a checkpoint path to continue from.
    ``warm_start``: weights-only start (a training checkpoint or anything ``load_model``
    accepts): the weights are loaded, the optimiser is fresh, the step counter restarts at 0
    and the warm-up is ``warm_start_warmup_steps`` long.
    ``keep_checkpoints``: how many recent checkpoints to keep (0: all).
    """

    out_dir: str = "runs/train"
    steps: int = 1000
    seed: int = 0
    device: str = "auto"
    bf16: bool = True
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    resume: str = "auto"
    warm_start: str | None = None
    warm_start_warmup_steps: int = 50
    log_every: int = 10
    tensorboard: bool = True
    progress: bool = True
    export: bool = True


@dataclass(frozen=True)
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    prompts: PromptSection = field(default_factory=PromptSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    run: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists) that ``from_dict`` reads back."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Validate a nested dict; ``ValueError`` names the first unknown or mistyped key."""
        return build_dataclass(cls, data, "")

    def replace(self, **sections: Any) -> TrainConfig:
        return dataclasses.replace(self, **sections)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
                ) -> TrainConfig:
    """A config from a YAML file (None: the defaults) with ``key=value`` overrides applied."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config not found: {path}")
        loaded = read_config_file(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: a training config must be a mapping of sections")
        data = loaded or {}
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(data, key, value)
    return TrainConfig.from_dict(data)


def parse_override(item: str) -> tuple[str, Any]:
    """``"optim.lr=3e-4"`` -> (``"optim.lr"``, 0.0003); the value is parsed as YAML."""
    if "=" not in item:
        raise ValueError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {item!r} has an empty key")
    return key, (_parse_value(raw) if raw.strip() else None)


def read_config_file(path: Path) -> Any:
    """YAML (needs PyYAML, the ``train`` extra) or JSON (no extra needed: JSON is also YAML)."""
    text = path.read_text(encoding="utf-8")
    try:
        import yaml
    except ImportError:
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: reading YAML configs needs PyYAML (pip install "
                             f"'ultrasam[train]'); without it, write the config as JSON "
                             f"({e})") from e
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {e}") from e


def _parse_value(raw: str) -> Any:
    """An override value: YAML scalars/lists when PyYAML is there, else JSON, else the string."""
    try:
        import yaml
    except ImportError:
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ValueError(f"cannot parse override value {raw!r}: {e}") from e


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``key="a.b"``, creating sections; ``ValueError``
    when a level on the way is not a section."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"config key {key!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def build_dataclass(cls: type, data: Any, prefix: str = "") -> Any:
    """An instance of the (nested, frozen) dataclass ``cls`` from a mapping, every value checked
    against its type hint; ``ValueError`` naming the dotted key (``prefix`` + name) of an
    unknown key or a bad value."""
    if not isinstance(data, dict):
        raise ValueError(f"config key {prefix.rstrip('.') or '<root>'!r} must be a mapping, "
                         f"got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown config key {prefix + str(unknown[0])!r} "
                         f"(known in this section: {sorted(names)})")
    kwargs = {}
    for name, value in data.items():
        key = prefix + name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build_dataclass(hint, value if value is not None else {}, key + ".")
        else:
            kwargs[name] = _coerce(value, hint, key)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a type hint; return it in the dataclass's own type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ValueError:
                continue
        raise _type_error(key, value, hint)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"config key {key!r} must be one of {list(args)}, got {value!r}")
        return value
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise _type_error(key, value, hint)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(key, value, hint)
        return value
    if hint is float:
        # YAML 1.1 reads "1e-4" (no dot before the exponent) as a string: accept it.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _type_error(key, value, hint) from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(key, value, hint)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _type_error(key, value, hint)
        return value
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _type_error(key, value, hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"config key {key!r} needs {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(key, value, hint)
        kt, vt = args
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    raise TypeError(f"unsupported config type {hint!r} for {key!r}")  # a bug in this module


def _type_error(key: str, value: Any, hint: Any) -> ValueError:
    name = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
    return ValueError(f"config key {key!r} expects {name}, got {value!r} "
                      f"({type(value).__name__})")

"""Any promptable model's image encoder as a prompt-free, multi-scale feature extractor.

Families (:class:`ultrasam.modeling.base.PromptableModel`):

- ``Sam`` with a ViT encoder (vit_b / vit_l / vit_h / tiny, SAM, MedSAM, UltraSam): one
  scale, the neck's B x C x S/16 x S/16 embedding. Units for partial unfreezing: the patch
  embedding (with the position embedding), each transformer block, the neck. LoRA wraps the
  attention ``qkv`` projections.
- ``Sam`` with the conv encoder (small): one scale, the FPN-merged B x C x S/4 x S/4
  embedding. Units: the stem, each stage (with its downsampling), the lateral projections
  with the neck.
- ``FusionNet`` (fusion, the default model): the four stage outputs (1/4 .. 1/32) of
  ``image_features`` (empty prompt maps). Units: the stride-2 stem, the stride-4 stem with the
  prompt input, each stage.

Modes: ``linear`` (frozen encoder), ``full`` (everything trains), ``partial`` (the last
``unfreeze`` units train), ``lora`` (ViT only: low-rank updates of the attention projections;
LayerNorms and everything else frozen). BatchNorm statistics stay frozen (eval mode) in every
mode but ``full``: a few hundred images give noisy batch statistics, and the running ones came
with the weights.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ..modeling.base import PromptableModel
from ..modeling.conv_encoder import ConvEncoder
from ..modeling.fusion import FusionNet
from ..modeling.image_encoder import ImageEncoderViT
from ..modeling.lora import add_lora

MODES: tuple[str, ...] = ("linear", "full", "partial", "lora")


class EncoderAdapter(nn.Module):
    """``forward(images uint8-valued B x 3 x S x S float, valid B x S x S bool)`` -> list of
    feature maps, finest first (``channels`` and ``strides`` describe them)."""

    def __init__(self, model: PromptableModel) -> None:
        super().__init__()
        self.model = model
        self.img_size = model.img_size
        if isinstance(model, FusionNet):
            self.family = "fusion"
            self.channels = list(model.config.conv_dims)
            self.strides = [4 * 2 ** i for i in range(len(self.channels))]
        else:
            enc = getattr(model, "image_encoder", None)
            if isinstance(enc, ImageEncoderViT):
                self.family = "vit"
            elif isinstance(enc, ConvEncoder):
                self.family = "conv"
            else:
                raise TypeError(f"no downstream adapter for {type(model).__name__} with "
                                f"encoder {type(enc).__name__}")
            self.channels = [model.config.prompt_embed_dim]
            self.strides = [model.config.patch_size]
        self.mode = "full"

    # ------------------------------------------------------------------------ structure
    def units(self) -> list[list[nn.Parameter]]:
        """The encoder's parameters in input-to-output units (see the module docstring)."""
        m = self.model
        if self.family == "fusion":
            mods = [[m.stem2], [m.stem4, m.prompt_in], *[[s] for s in m.stages]]
        elif self.family == "vit":
            enc = m.image_encoder
            return [[enc.pos_embed, *enc.patch_embed.parameters()],
                    *[list(b.parameters()) for b in enc.blocks], list(enc.neck.parameters())]
        else:
            enc = m.image_encoder
            mods = [[enc.stem]] + [[s] if i == 0 else [enc.downsamples[i - 1], s]
                                   for i, s in enumerate(enc.stages)] \
                + [[enc.lateral, enc.neck]]
        return [[p for mod in u for p in mod.parameters()] for u in mods]

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        for unit in self.units():
            yield from unit

    def set_mode(self, mode: str, unfreeze: int = 2, lora_rank: int = 4,
                 lora_alpha: float = 8.0) -> None:
        """Freeze / unfreeze / wrap the encoder for ``mode`` (see the module docstring)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {list(MODES)}")
        for p in self.model.parameters():
            p.requires_grad_(False)
        if mode == "full":
            for p in self.encoder_parameters():
                p.requires_grad_(True)
        elif mode == "partial":
            units = self.units()
            if not 1 <= unfreeze <= len(units):
                raise ValueError(f"unfreeze must be 1..{len(units)} units for this "
                                 f"{self.family} encoder, got {unfreeze}")
            for unit in units[-unfreeze:]:
                for p in unit:
                    p.requires_grad_(True)
        elif mode == "lora":
            if self.family != "vit":
                raise ValueError(f"LoRA needs a ViT encoder (attention projections); this is a "
                                 f"{self.family} encoder: use mode 'partial' instead")
            add_lora(self.model, lora_rank, lora_alpha)  # every attention qkv
            for name, p in self.model.image_encoder.named_parameters():
                p.requires_grad_(".lora_" in f".{name}")
        self.mode = mode

    def train(self, mode: bool = True) -> EncoderAdapter:
        super().train(mode)
        if self.mode != "full":
            self.model.eval()  # frozen BatchNorm statistics (see the module docstring)
        return self

    # -------------------------------------------------------------------------- forward
    def preprocess(self, images: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """B x 3 x S x S 0-255 (padded with zeros) -> normalised model input, zero padding as
        the model's own ``preprocess`` gives."""
        x = self.model.preprocess(images.to(self.model.dtype))
        return x * valid[:, None].to(x.dtype)

    def forward(self, images: torch.Tensor, valid: torch.Tensor) -> list[torch.Tensor]:
        x = self.preprocess(images, valid)
        if self.family == "fusion":
            return list(self.model.image_features(x))  # type: ignore[operator]
        return [self.model.image_encoder(x)]  # type: ignore[operator]


def load_encoder(checkpoint: str | None = None, variant: str | None = None,
                 device: str | torch.device = "cpu", seed: int = 0
                 ) -> tuple[EncoderAdapter, str]:
    """The encoder of a checkpoint (``load_model``: any format it accepts; None = the bundled
    default model), or of a ``variant`` randomly initialised from ``seed``. Returns it with a
    short name for reports."""
    if checkpoint is not None and variant is not None:
        raise ValueError("give a checkpoint or a variant for random init, not both")
    if variant is not None:
        from ..modeling.build import build_model

        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = build_model(variant)
        return EncoderAdapter(model.to(device)), f"{variant}-random-init"
    from ..weights.checkpoints import load_model

    model = load_model(checkpoint, device=device)
    name = "default" if checkpoint is None else str(checkpoint).rstrip("/").split("/")[-1]
    return EncoderAdapter(model), name

"""Which prompts may share one decoder call, and how they are stacked into it.

A decoder call takes P prompts of one layout: N points each (P x N x 2 coordinates, P x N
labels), a box each or none (P x 4), a mask each or none (P x 1 x L x L), and one multimask
flag. Prompts of independent requests (an interactive server's users, say) are grouped by
:func:`batch_key`: prompts with equal keys are stacked by :func:`stack_prompts` and decoded
together, with exactly the outputs each would get alone (up to float rounding).

What must match depends on the model (``PromptableModel.exact_prompt_padding``): SAM's decoder
attends to every prompt token, so a padding point or an absent box changes the answer and
prompts must have identical layouts; a model that rasterises its prompts (FusionNet) draws
nothing for a label -1 point or a box of -1s, so points and boxes are padded freely.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

PAD_LABEL = -1  # SAM's "not a point" label
PAD_BOX = -1.0  # a box outside every image: rasterises to nothing


@dataclass(frozen=True)
class PromptTensors:
    """Prompts in the model's input frame (already resized like the image).

    point_coords: P x N x 2 xy; point_labels: P x N (1 / 0, or -1 padding); box: P x 4 XYXY;
    mask_input: P x 1 x L x L low-res logits; each None when absent. ``multimask_output``
    asks for SAM's three candidates; ``refine`` runs UltraSam's two-pass schedule.
    """

    point_coords: torch.Tensor | None
    point_labels: torch.Tensor | None
    box: torch.Tensor | None
    mask_input: torch.Tensor | None
    multimask_output: bool
    refine: bool

    def __len__(self) -> int:
        for t in (self.point_coords, self.box, self.mask_input):
            if t is not None:
                return int(t.shape[0])
        return 0

    @property
    def n_points(self) -> int:
        return 0 if self.point_coords is None else int(self.point_coords.shape[1])


def batch_key(prompt: PromptTensors, exact_padding: bool) -> Hashable:
    """Prompts with equal keys can be stacked into one decoder call (see the module doc)."""
    key: tuple[Hashable, ...] = (prompt.multimask_output, prompt.refine,
                                 prompt.mask_input is not None)
    if not exact_padding:
        return key + (prompt.n_points, prompt.box is not None)
    if prompt.refine:
        # Refinement keeps a prompt that has a box and replaces a points-only prompt by its
        # first mask's box; a padding box would turn the latter into the former.
        return key + (prompt.box is not None,)
    return key


def stack_prompts(prompts: Sequence[PromptTensors]) -> PromptTensors:
    """One P x ... batch of prompts with equal :func:`batch_key` (each 1 x ...).

    Points are padded to the longest prompt with label -1 at (0, 0), and a prompt without a
    box gets a box of -1s when others have one: exact only for models whose
    ``exact_prompt_padding`` is True, which is what the key guarantees.
    """
    if not prompts:
        raise ValueError("no prompts to stack")
    first = prompts[0]
    if any(len(p) != 1 for p in prompts):
        raise ValueError("stack_prompts takes single prompts (P = 1 each)")
    n = max(p.n_points for p in prompts)
    coords = labels = box = mask = None
    if n:
        coords = torch.cat([_pad_points(p, n)[0] for p in prompts])
        labels = torch.cat([_pad_points(p, n)[1] for p in prompts])
    if any(p.box is not None for p in prompts):
        box = torch.cat([p.box if p.box is not None else _pad_box(p) for p in prompts])
    if first.mask_input is not None:
        mask = torch.cat([p.mask_input for p in prompts  # type: ignore[misc]
                          if p.mask_input is not None])
        if mask.shape[0] != len(prompts):
            raise ValueError("either every prompt of a batch has a mask input or none")
    return PromptTensors(coords, labels, box, mask, first.multimask_output, first.refine)


def _pad_points(p: PromptTensors, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1 x n x 2 coordinates and 1 x n labels: ``p``'s points, then label -1 padding."""
    device = _device(p)
    k = p.n_points
    coords = torch.zeros(1, n, 2, dtype=torch.float, device=device)
    labels = torch.full((1, n), PAD_LABEL, dtype=torch.int, device=device)
    if k:
        assert p.point_coords is not None and p.point_labels is not None
        coords[:, :k] = p.point_coords
        labels[:, :k] = p.point_labels
    return coords, labels


def _pad_box(p: PromptTensors) -> torch.Tensor:
    return torch.full((1, 4), PAD_BOX, dtype=torch.float, device=_device(p))


def _device(p: PromptTensors) -> torch.device:
    for t in (p.point_coords, p.box, p.mask_input):
        if t is not None:
            return t.device
    return torch.device("cpu")


def batch_sizes(n: int, max_batch: int, pow2: bool = False) -> list[int]:
    """Sizes of the decoder calls for ``n`` stackable prompts: ``max_batch`` at a time, the
    rest in one call, or with ``pow2`` the rest as its binary digits (11, 16 -> 8, 2, 1)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    full, rest = divmod(n, max_batch)
    sizes = [max_batch] * full
    if rest and pow2:
        sizes += [1 << k for k in range(rest.bit_length() - 1, -1, -1) if rest >> k & 1]
    elif rest:
        sizes.append(rest)
    return sizes

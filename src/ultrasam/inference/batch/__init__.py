"""Batch prediction: many images in (files, folders, globs, manifests, COCO), files out.

``predict_batch`` is the one call (``ultrasam predict`` runs it); ``plan_batch`` + ``run_batch``
split it for callers that want to inspect the plan first. Modules, bottom up: ``prompts``,
``items`` (output keys), ``inputs`` (discovery), ``masks``/``overlay``/``files`` (encodings and
writing), ``dicom_seg``/``nifti_labels`` (optional outputs), ``worker`` (one item, any
process), ``engines`` (this process, a process pool, Dask), ``run`` (the job and its results).
"""

from __future__ import annotations

from .engines import EngineSpec
from .prompts import Prompt, parse_box, parse_point
from .run import BatchPlan, Summary, plan_batch, predict_batch, run_batch
from .worker import ItemOptions, ModelLoadFailed, ModelSpec

__all__ = ["BatchPlan", "EngineSpec", "ItemOptions", "ModelLoadFailed", "ModelSpec", "Prompt",
           "Summary", "parse_box", "parse_point", "plan_batch", "predict_batch", "run_batch"]

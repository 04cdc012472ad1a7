#!/usr/bin/env bash
# Train, export and evaluate the default `small` model (docs/default-model.md).
#
#   scripts/gpu_train_default.sh prepare   # here, on a CPU machine that has ../shared/data
#   scripts/gpu_train_default.sh train [key=value ...]   # on the GPU machine, writes to $OUT
#
# prepare: group-aware seeded split of the shared corpus (`ultrasam data split`), a training
#   pack of its *train* split only (`ultrasam data pack --split train`, TG3K capped), a
#   lossless copy of MMOTU_2d val (corpus resolution) for evaluation, and the pycocotools wheel
#   the GPU image lacks, all under $DATA_DIR (default runs/gpu_data, ignored by git); it also
#   copies $WARM_START (a native model folder, e.g. the previous run's export) to
#   $DATA_DIR/warm_start, and prints what will travel.
# train: (1) measures the throughput in a short probe run unless $STEPS is set and sizes the
#   run to $TRAIN_SECONDS; (2) trains configs/default_small_gpu.yaml from the pack, warm
#   started from $DATA_DIR/warm_start when present, resuming from run checkpoints left in
#   $WORK by an earlier command on the same machine; (3) exports fp16 safetensors (<= 16 MiB)
#   with a model card to $OUT/default_small/; (4) evaluates it with `ultrasam evaluate` on
#   MMOTU_2d val at corpus resolution (box / point, with and without refinement, ellipse
#   baseline); (5) writes $OUT/train.log, $OUT/eval_summary.md and $OUT/records.tar.gz (run
#   config, metrics.jsonl, probe, pack.json, eval metrics, environment).
#   Extra key=value arguments are passed to both training runs (the CPU smoke shrinks the
#   batch with them).
#
# Environment (defaults): DATA_DIR=runs/gpu_data  WORK=/tmp/default_small  DEVICE=cuda
#   TRAIN_SECONDS=300  PROBE_STEPS=60  STEPS (unset: probe)  WARM_START (prepare: a folder to
#   carry; train: default $DATA_DIR/warm_start when it exists)  EVAL_MAX_IMAGES (unset: all
#   469)  CORPUS=../shared/data/us-corpus  PACK_CAPS="TG3K=500"  PYTHON=python3 (prepare:
#   python)  CONFIG=configs/default_small_gpu.yaml
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-}
shift || true
DATA_DIR=${DATA_DIR:-runs/gpu_data}
CONFIG=${CONFIG:-configs/default_small_gpu.yaml}
MAX_CARRY_MIB=64

prepare() {
    local py=${PYTHON:-python}
    local corpus=${CORPUS:-../shared/data/us-corpus}
    local caps=${PACK_CAPS:-TG3K=500}
    [ -d "$corpus" ] || { echo "corpus not found: $corpus" >&2; exit 1; }
    mkdir -p "$DATA_DIR"
    # 1. Group-aware, seeded train/val/test split (official splits kept: MMOTU_2d val stays
    #    val). Written outside the carried folder: its JSON points into ../shared.
    local split_dir=${SPLIT_DIR:-runs/gpu_split}
    "$py" -m ultrasam.cli data split "$corpus" --out "$split_dir" --seed 0
    # 2. The training pack: the train split only.
    local cap_args=()
    for c in $caps; do cap_args+=(--cap "$c"); done
    "$py" -m ultrasam.cli data pack "$split_dir/train.coco.json" --max-side 256 --quality 60 \
        --split train "${cap_args[@]}" --out "$DATA_DIR/train_pack"
    # 3. MMOTU_2d val, lossless (the corpus's own JPEGs), for evaluation on the GPU.
    "$py" - "$corpus/MMOTU_2d" "$DATA_DIR/mmotu_val/MMOTU_2d" <<'EOF'
import json, shutil, sys
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
coco = json.loads((src / "annotations.coco.json").read_text())
images = [im for im in coco["images"] if im.get("split") == "val"]
ids = {im["id"] for im in images}
coco["images"] = images
coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in ids]
(dst / "images").mkdir(parents=True, exist_ok=True)
for im in images:
    shutil.copyfile(src / "images" / im["file_name"], dst / "images" / im["file_name"])
(dst / "annotations.coco.json").write_text(json.dumps(coco, sort_keys=True))
print(f"MMOTU_2d val: {len(images)} images, {len(coco['annotations'])} instances -> {dst}")
EOF
    # 4. pycocotools for the GPU image's Python 3.12 (it is not installed there).
    if ! ls "$DATA_DIR"/wheels/pycocotools-*.whl >/dev/null 2>&1; then
        "$py" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d "$DATA_DIR/wheels" pycocotools==2.0.11
    fi
    # 5. Warm-start weights for the next run (weights only; the optimiser starts fresh).
    if [ -n "${WARM_START:-}" ]; then
        rm -rf "$DATA_DIR/warm_start"
        cp -r "$WARM_START" "$DATA_DIR/warm_start"
    fi
    local data_mib tree_mib
    data_mib=$(du -sm "$DATA_DIR" | cut -f1)
    tree_mib=$(git ls-files -co --exclude-standard -z | du -cm --files0-from=- | tail -1 | cut -f1)
    echo "carried: $DATA_DIR ${data_mib} MiB + working tree ${tree_mib} MiB (limit ${MAX_CARRY_MIB})"
    if [ $((data_mib + tree_mib)) -gt $MAX_CARRY_MIB ]; then
        echo "too large to travel: lower PACK_CAPS or the pack's quality" >&2
        exit 1
    fi
}

train() {
    : "${OUT:?set OUT to the folder that comes back}"
    local py=${PYTHON:-python3}
    local device=${DEVICE:-cuda}
    local work=${WORK:-/tmp/default_small}
    local seconds=${TRAIN_SECONDS:-300}
    local probe_steps=${PROBE_STEPS:-60}
    local pack=$DATA_DIR/train_pack
    local warm=${WARM_START:-}
    if [ -z "$warm" ] && [ -f "$DATA_DIR/warm_start/model.safetensors" ]; then
        warm=$DATA_DIR/warm_start
    fi
    mkdir -p "$OUT" "$work"
    work=$(cd "$work" && pwd)
    exec > >(tee -a "$OUT/train.log") 2>&1
    echo "== $(date -u +%FT%TZ) default small model: device=$device seconds=$seconds warm=${warm:-none}"
    if ! "$py" -c "import pycocotools" 2>/dev/null; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
            "$DATA_DIR"/wheels/*.whl
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    [ -f "$pack/pack.json" ] || { echo "no training pack at $pack (run prepare)" >&2; exit 1; }
    { if command -v nvidia-smi >/dev/null; then nvidia-smi; fi; "$py" -c "import torch, sys; print(sys.version); print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } > "$work/environment.txt" 2>&1
    cat "$work/environment.txt"
    local common=("data.paths=[$pack]" "run.device=$device")

    # 1. Throughput probe -> the number of steps that fits the time budget.
    local steps=${STEPS:-}
    if [ -z "$steps" ]; then
        rm -rf "$work/probe"
        "$py" -m ultrasam.cli train "$CONFIG" "${common[@]}" "run.out_dir=$work/probe" \
            "run.steps=$probe_steps" "run.log_every=$(( probe_steps >= 3 ? probe_steps / 3 : 1 ))" "run.export=false" \
            "run.resume=never" "run.checkpoint_every=$probe_steps" "$@" > "$work/probe.json"
        steps=$("$py" - "$work/probe" "$seconds" <<'EOF'
import json, sys
from pathlib import Path
run, seconds = Path(sys.argv[1]), float(sys.argv[2])
last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
batch = json.loads((run / "config.json").read_text())["data"]["images_per_batch"]
rate = last["images_per_s"] / batch   # steps per second after warm-up (last window)
print(max(1, int(seconds * rate)))
EOF
)
        echo "probe: $(tail -1 "$work/probe/metrics.jsonl")"
    fi
    echo "training $steps steps"

    # 2. The run: resumes from $work/run/checkpoints when an earlier command left some.
    local run=$work/run
    local warm_args=()
    [ -n "$warm" ] && warm_args=("run.warm_start=$warm")
    local status=0
    # A run that outlives the estimate by much is stopped; its newest checkpoint is exported
    # (run.checkpoint_every), so the command still ends inside the machine's 10 minutes.
    timeout --signal=INT $((seconds + seconds / 4 + 30)) \
        "$py" -m ultrasam.cli train "$CONFIG" "${common[@]}" "run.out_dir=$run" \
        "run.steps=$steps" "${warm_args[@]}" "$@" > "$work/train_summary.json" || status=$?
    cat "$work/train_summary.json"
    echo "training exit status: $status"

    # 3. fp16 export (the finished run's export, else the newest checkpoint).
    "$py" - "$run" "$work/export" <<'EOF'
import sys
from pathlib import Path
import torch
from ultrasam.weights.checkpoints import load_model, save_native
from ultrasam.config import ModelConfig
from ultrasam.modeling import build_model
from ultrasam.train.loop import checkpoints_in, load_checkpoint
run, out = Path(sys.argv[1]), Path(sys.argv[2])
if (run / "model" / "model.safetensors").is_file():
    model, source = load_model(run / "model"), str(run / "model")
else:
    found = checkpoints_in(run / "checkpoints")
    if not found:
        sys.exit(f"no export and no checkpoint in {run}")
    state = load_checkpoint(found[-1])
    model = build_model(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    source = str(found[-1])
save_native(model.float().eval(), out, source=source, dtype=torch.float16, licence="other")
size = (out / "model.safetensors").stat().st_size
print(f"exported {source} -> {out}: {size / 2**20:.2f} MiB fp16")
if size > 16 * 2**20:
    sys.exit(f"weights file is {size} bytes, over the 16 MiB budget")
EOF

    # 4. MMOTU_2d val at corpus resolution: the paper's protocols and the ellipse baseline.
    local eval_args=()
    [ -n "${EVAL_MAX_IMAGES:-}" ] && eval_args=(--max-images "$EVAL_MAX_IMAGES")
    rm -rf "$work/eval"
    "$py" -m ultrasam.cli evaluate --checkpoint "$work/export" \
        --data "$DATA_DIR/mmotu_val/MMOTU_2d" --split val --out "$work/eval" --no-sweeps \
        --baselines ellipse --device "$device" "${eval_args[@]}"
    cp "$work/eval/summary.md" "$OUT/eval_summary.md"
    cat "$OUT/eval_summary.md"

    # 5. The weights with their card, and the run's records.
    "$py" - "$work" "$OUT/default_small" "$pack" "$CONFIG" "$*" "${warm:-none}" <<'EOF'
import json, shutil, sys
from pathlib import Path
work, dst, pack, config, overrides, warm = (Path(sys.argv[1]), Path(sys.argv[2]),
                                            Path(sys.argv[3]), sys.argv[4], sys.argv[5],
                                            sys.argv[6])
shutil.rmtree(dst, ignore_errors=True)
shutil.copytree(work / "export", dst)
cfg = json.loads((dst / "config.json").read_text())["model"]
n_bytes = (dst / "model.safetensors").stat().st_size
metrics = [json.loads(x) for x in (work / "run" / "metrics.jsonl").read_text().splitlines()]
run_cfg = json.loads((work / "run" / "config.json").read_text())
packed = json.loads((pack / "pack.json").read_text())["datasets"]
env = (work / "environment.txt").read_text()
gpu = next((ln.strip() for ln in env.splitlines() if "H100" in ln or "H200" in ln), "see records")
rows = "\n".join(f"| {d} | {v['packed']} | {v['instances']} |" for d, v in sorted(packed.items()))
card = f"""---
license: other
license_name: research-use-with-attribution
library_name: ultrasam
pipeline_tag: mask-generation
tags: [ultrasound, segment-anything, medical-imaging]
---

# ultrasam default model (`small`)

Promptable ultrasound segmentation (points, boxes, mask prompts), SAM-style. Trained from
scratch by `scripts/gpu_train_default.sh`; see `docs/default-model.md` in the repository for
the recipe, the data's citations and licences, and the CPU benchmarks.

## Architecture
- image encoder: ConvNeXt-style stages {cfg['conv_dims']} x depths {cfg['conv_depths']}
  (depthwise {cfg['conv_kernel_size']}x{cfg['conv_kernel_size']}), FPN-like merge to a
  {cfg['img_size'] // cfg['patch_size']}x{cfg['img_size'] // cfg['patch_size']}x{cfg['prompt_embed_dim']} embedding,
  {cfg['img_size']} px input;
- SAM's prompt encoder and mask decoder at width {cfg['prompt_embed_dim']} (MLP {cfg['decoder_mlp_dim']},
  {cfg['decoder_num_heads']} heads);
- weights: {n_bytes / 2**20:.2f} MiB fp16 safetensors ({n_bytes // 2:,} values).

## Training (this run)
- data: training pack of the shared corpus's group-aware seeded train split (MMOTU_2d val and
  every dataset's held-out val/test split excluded):

| dataset | images | instances |
|---|---|---|
{rows}

- recipe: `{config}` with `run.steps={run_cfg['run']['steps']}` {overrides}; warm start: {warm}
- compute: {gpu}; {sum(r['seconds'] for r in metrics):.0f} s of training steps;
  final logged loss {metrics[-1]['loss']:.4f} at step {metrics[-1]['step']}

## Evaluation (MMOTU_2d val, corpus resolution, this run)

{(work / 'eval' / 'summary.md').read_text().split('## Figures')[0].strip()}

## Licence, intended use and limitations
Trained on public research datasets (BUSI, BUS-UCLM, DDTI, HC18, MMOTU-2D, NERVE, PSFHS,
STU-Hospital, TG3K, USGRA): the weights inherit the most restrictive terms of that mix —
research use with attribution; cite the datasets listed in docs/default-model.md.
Not a medical device: research use only; every output must be reviewed by a qualified person.
"""
(dst / "README.md").write_text(card)
print(f"wrote {dst}")
EOF
    local rec=$work/records
    rm -rf "$rec" && mkdir -p "$rec/eval"
    cp "$work/run/config.json" "$rec/train_config.json"
    cp "$work/run/metrics.jsonl" "$work/train_summary.json" "$work/environment.txt" "$rec/"
    cp "$pack/pack.json" "$rec/pack.json"
    [ -d "$work/probe" ] && cp "$work/probe/metrics.jsonl" "$rec/probe_metrics.jsonl"
    (cd "$work/eval" && find . \( -name metrics.json -o -name 'summary.*' \) \
        -exec cp --parents {} "$rec/eval/" \;)
    tar -czf "$OUT/records.tar.gz" -C "$work" records
    ls -la "$OUT" "$OUT/default_small"
}

case "$MODE" in
    prepare) prepare "$@" ;;
    train) train "$@" ;;
    *) echo "usage: $0 prepare | train [key=value ...]" >&2; exit 2 ;;
esac

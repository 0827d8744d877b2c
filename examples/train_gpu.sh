#!/usr/bin/env bash
# Train on a lent GPU machine: pack the token cache here, train there, bring the weights back.
#
#   examples/train_gpu.sh pack [CACHE]   here: CACHE (default cache/maestro), train and validation
#                                        splits only, xz-packed into cache/gpu/ (ignored by git)
#   examples/train_gpu.sh run            there, from the repository root, with $OUT set: unpack,
#                                        train on every GPU (torchrun when there are several) for
#                                        $MINUTES, leave the weights in $OUT in pieces under 16 MiB
#   examples/train_gpu.sh join DIR [CKPT]  here: the pieces from DIR -> CKPT (default
#                                        checkpoints/gpu.pt), to export or to continue with
#                                        `livepiano train --init-from CKPT`
#
# On the device tool: command "bash examples/train_gpu.sh run", carry ["cache/gpu"], a timeout
# of MINUTES * 60 + 120 seconds. The schedule spans the time budget (--plan minutes), so the
# run ends annealed however fast the GPU turns out to be. Settings, from the environment:
# MINUTES (7), HIDDEN (512), LAYERS (2), BATCH (256), BPTT (128), LR (2e-3), DROPOUT (0.1),
# NPROC (all GPUs). The shape is the largest whose int8 step is at about 1 ms on one
# CPU thread (README, "The model").
set -euo pipefail

cmd=${1:-}
pack=cache/gpu/cache.tar.xz

case "$cmd" in
pack)
    cache=${2:-cache/maestro}
    [ -f "$cache/index.json" ] || { echo "train_gpu.sh: $cache is not a token cache; make one with \`livepiano prepare DATA_DIR -o $cache\`." >&2; exit 1; }
    mkdir -p cache/gpu
    # The test split stays behind: training never reads it, and the trip is limited in size.
    python3 - "$cache" cache/gpu/stage <<'EOF'
import json, shutil, sys
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
index = json.loads((src / "index.json").read_text())
index["splits"] = {k: v for k, v in index["splits"].items() if k != "test"}
for split in index["splits"]:
    shutil.copy(src / f"{split}.npy", dst / f"{split}.npy")
(dst / "index.json").write_text(json.dumps(index))
EOF
    tar -C cache/gpu/stage -cJf "$pack" .
    rm -rf cache/gpu/stage
    echo "packed $cache into $pack ($(du -h "$pack" | cut -f1)); carry cache/gpu"
    ;;
run)
    : "${OUT:?train_gpu.sh run writes to \$OUT; run it through the device tool, or set OUT to a folder.}"
    [ -f "$pack" ] || { echo "train_gpu.sh: no $pack; run \`examples/train_gpu.sh pack\` first and carry cache/gpu." >&2; exit 1; }
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")
    device=cuda
    if [ "$gpus" = 0 ]; then
        echo "train_gpu.sh: torch sees no GPU here; training on the CPU instead (a trial run)." >&2
        device=cpu
        gpus=1
    fi
    nproc=${NPROC:-$gpus}
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/cache"
    tar -C "$work/cache" -xJf "$pack"
    args=(train "$work/cache" -o "$work/run.pt" --device "$device" --plan minutes
          --minutes "${MINUTES:-7}" --hidden "${HIDDEN:-512}" --layers "${LAYERS:-2}"
          --batch "${BATCH:-256}" --bptt "${BPTT:-128}" --lr "${LR:-2e-3}"
          --dropout "${DROPOUT:-0.1}" --eval-every 1 --checkpoint-every 2 ${EXTRA:-})
    if [ "$nproc" -gt 1 ]; then
        python3 -m torch.distributed.run --standalone --nproc_per_node "$nproc" -m livepiano "${args[@]}" 2>&1 | tee "$OUT/train.log"
    else
        python3 -m livepiano "${args[@]}" 2>&1 | tee "$OUT/train.log"
    fi
    # The optimizer's moments would not fit the trip back; the weights, config and history do.
    python3 - "$work/run.pt" "$work/weights.pt" <<'EOF'
import sys, torch
ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
for key in ("optimizer", "resume"):
    ckpt.pop(key, None)
torch.save(ckpt, sys.argv[2])
print(f"weights: step {ckpt['step']}, {ckpt['tokens_seen']:,} tokens, "
      f"validation NLL {ckpt['meta']['val_nll']}")
EOF
    split -b 15m -d "$work/weights.pt" "$OUT/weights.pt.part"
    ls -l "$OUT"
    ;;
join)
    dir=${2:?train_gpu.sh join needs the folder the pieces came back to}
    out=${3:-checkpoints/gpu.pt}
    mkdir -p "$(dirname "$out")"
    cat "$dir"/weights.pt.part* > "$out"
    echo "wrote $out; export it with \`livepiano export $out -o models/NAME.onnx --int8\`"
    ;;
*)
    echo "usage: examples/train_gpu.sh pack [CACHE] | run | join DIR [CKPT]" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# Every GPU measurement the issues ask for, in one call of under 10 minutes on one H100:
#   1. python -m irnet_lib.bench in eager, channels_last and bf16 modes (batch 256), with the
#      55-epoch projection of the recipe (130k random 64 px images, tensor pipeline, bf16 eager);
#   2. the same for torch.compile + bf16 (the GPU's default path in the bench);
#   3. the three blocks trained on the full Fashion-MNIST (60k / 10k, 64 px pipeline, batch 256,
#      the recipe's peak lr 0.2, its schedule's shape compressed to 10 epochs).
# Each stage has its own time limit, so a slow stage cannot starve the others, and everything is
# packed into OUT/results.tgz (checkpoints left out) after each stage.
#
#   bash benchmarks/gpu_check.sh OUT [FASHION_MNIST_ROOT]
set -u
OUT=${1:?usage: gpu_check.sh OUT [FASHION_MNIST_ROOT]}
FM_ROOT=${2:-data}
EPOCHS=${EPOCHS:-10}
mkdir -p "$OUT"
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
log() { echo "== $(date +%T) $*"; }
pack() { tar czf "$OUT/results.tgz" --exclude='*.pt' -C "$WORK" . ; }

log environment
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name())"
nproc

log "stage 1: bench, eager / channels_last / bf16"
timeout 160 python3 -m irnet_lib.bench --device cuda --modes eager channels_last bf16 --reps 5 --out "$WORK/bench-eager"
pack

log "stage 2: bench, torch.compile + bf16"
timeout 170 python3 -m irnet_lib.bench --device cuda --modes compile_bf16 --variants standard se condconv \
    --reps 5 --out "$WORK/bench-compile"
pack

log "stage 3: Fashion-MNIST, three blocks, $EPOCHS epochs"
timeout 220 python3 -m irnet_lib.reproduce --data fashion-mnist --root "$FM_ROOT" --out "$WORK/fashion-mnist-gpu-10ep" \
    --figure "$WORK/fig5_fashion-mnist-gpu-10ep.png" --epochs "$EPOCHS" --warmup-epochs 1 --quiet
pack
log done
ls -la "$OUT"

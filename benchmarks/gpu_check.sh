#!/usr/bin/env bash
# The GPU measurements the issues ask for, in stages that each fit a time limit:
#   bench    python -m irnet_lib.bench in channels_last and bf16 modes (batch 256, the three
#            variants), with the 55-epoch projection of the recipe (130k random 64 px images,
#            tensor pipeline, one measured epoch per variant);
#   eager    the same for contiguous fp32 eager and MobileNetV2 (no projection);
#   compile  torch.compile + bf16 (the GPU's default path in the bench), with its projection;
#   fmnist   the blocks trained on the full Fashion-MNIST (60k / 10k, 64 px pipeline, batch 256,
#            the recipe's peak lr 0.2, its schedule's shape compressed to $EPOCHS epochs).
# Everything is packed into OUT/results.tgz (checkpoints left out) after each stage, and the bench
# saves its JSON as it goes, so a stage stopped by its limit keeps what it measured.
#
#   bash benchmarks/gpu_check.sh OUT [FASHION_MNIST_ROOT]
#   STAGES="fmnist" BLOCKS="condconv" bash benchmarks/gpu_check.sh OUT data    # one stage, one block
#
# Measured once on an H200 (2026-11-26): bench ~125 s; torch.compile warm-up 67-81 s per variant
# (so compile needs ~5 min for three); fmnist at 10 epochs 68 s (standard), 89 s (SE), ~260 s
# (CondConv, projected from its first epoch). One device call may run 10 minutes: plan two calls.
set -u
OUT=${1:?usage: gpu_check.sh OUT [FASHION_MNIST_ROOT]}
FM_ROOT=${2:-data}
STAGES=${STAGES:-bench fmnist}
EPOCHS=${EPOCHS:-10}
BLOCKS=${BLOCKS:-standard se condconv}
mkdir -p "$OUT"
# Outside OUT (whose files come back one by one): on a machine kept between two calls, a second
# call finds the first one's checkpoints here and resumes the training runs.
WORK=${WORK:-$PWD/.gpu-work}
mkdir -p "$WORK"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
log() { echo "== $(date +%T) $*"; }
pack() { tar czf "$OUT/results.tgz" --exclude='*.pt' -C "$WORK" . ; }

log environment
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name())"

for stage in $STAGES; do
  case $stage in
    bench)
      log "bench: channels_last, bf16, projection"
      timeout "${BENCH_S:-200}" python3 -m irnet_lib.bench --device cuda --modes channels_last bf16 \
          --variants standard se condconv --reps 3 --out "$WORK/bench" ;;
    eager)
      log "bench: eager, MobileNetV2"
      timeout "${EAGER_S:-150}" python3 -m irnet_lib.bench --device cuda --modes eager channels_last bf16 --reps 3 \
          --no-project --out "$WORK/bench-eager" ;;
    compile)
      log "bench: torch.compile + bf16"
      timeout "${COMPILE_S:-420}" python3 -m irnet_lib.bench --device cuda --modes compile_bf16 \
          --variants standard se condconv --reps 3 --out "$WORK/bench-compile" ;;
    fmnist)
      log "Fashion-MNIST, $BLOCKS, $EPOCHS epochs"
      timeout "${FMNIST_S:-380}" python3 -m irnet_lib.reproduce --data fashion-mnist --root "$FM_ROOT" \
          --out "$WORK/fashion-mnist-gpu-${EPOCHS}ep" --figure "$WORK/fig5_fashion-mnist-gpu-${EPOCHS}ep.png" \
          --epochs "$EPOCHS" --warmup-epochs 1 --blocks $BLOCKS --quiet ;;
    *) echo "unknown stage $stage (bench, eager, compile, fmnist)"; exit 2 ;;
  esac
  pack
done
log done
ls -la "$OUT"

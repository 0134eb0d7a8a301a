#!/usr/bin/env bash
# The GPU measurements the issues ask for, in stages that each fit a time limit:
#   test     the CUDA-graph tests (tests/test_graphs.py): a replayed step equals the eager one;
#   bench    python -m irnet_lib.bench: the three variants and MobileNetV2 in eager, channels_last,
#            bf16 and graph_bf16 modes (batch 256), with the 55-epoch projection of the recipe in
#            the GPU's default mode (graph_bf16; 130k random 64 px images, tensor pipeline, one
#            measured epoch per variant);
#   project  the bench in graph_bf16 mode only, with its projection;
#   profile  benchmarks/gpu_profile.py: kernels per step, GPU time against wall time;
#   compile  torch.compile + bf16, with its projection (warm-up 67-81 s per variant on an H200);
#   fmnist   the blocks trained on the full Fashion-MNIST (60k / 10k, 64 px pipeline, batch 256,
#            the recipe's peak lr 0.2, its schedule's shape compressed to $EPOCHS epochs).
# Everything is packed into OUT/results.tgz (checkpoints left out) after each stage, and the bench
# saves its JSON as it goes, so a stage stopped by its limit keeps what it measured.
#
#   bash benchmarks/gpu_check.sh OUT [FASHION_MNIST_ROOT]
#   STAGES="fmnist" BLOCKS="condconv" bash benchmarks/gpu_check.sh OUT data    # one stage, one block
#
# Measured on an H200 (2026-11-26, with CUDA graphs): test 45 s, profile 55 s, bench 145 s, project
# 90 s; fmnist at 10 epochs 60 s (standard), 70 s (SE), 135 s (CondConv), loading included;
# torch.compile's warm-up (an earlier session) 67-81 s per variant. On an H100 (2026-11-26): test 72 s,
# bench 194 s, profile 64 s; fmnist at 10 epochs 90 s (standard), 106 s (SE); compile_bf16 of the
# standard variant alone 180 s (88 s warm-up). One device call may run 10 minutes, and a session's
# device time is short: pick the stages (STAGES=...) to fit.
set -u
OUT=${1:?usage: gpu_check.sh OUT [FASHION_MNIST_ROOT]}
FM_ROOT=${2:-data}
STAGES=${STAGES:-test bench profile fmnist}
EPOCHS=${EPOCHS:-10}
BLOCKS=${BLOCKS:-standard se condconv}
FMNIST_NAME=${FMNIST_NAME:-fashion-mnist-gpu-${EPOCHS}ep}   # and FMNIST_ARGS: more reproduce flags
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
    test)
      log "tests: CUDA graphs"
      # -o addopts=: the project's defaults ask for nbval, which a bare GPU image may lack
      timeout "${TEST_S:-120}" python3 -m pytest -q -p no:cacheprovider -o addopts= tests/test_graphs.py 2>&1 | tail -5 ;;
    project)
      log "bench: graph_bf16 only, with the projection"
      timeout "${PROJECT_S:-150}" python3 -m irnet_lib.bench --device cuda --modes graph_bf16 \
          --variants standard se condconv --reps 3 --out "$WORK/bench-projection" ;;
    bench)
      log "bench: eager, channels_last, bf16, graph_bf16, MobileNetV2; projection"
      timeout "${BENCH_S:-240}" python3 -m irnet_lib.bench --device cuda --modes eager channels_last bf16 graph_bf16 \
          --reps 3 --out "$WORK/bench" ;;
    profile)
      log "profile: kernels per training step"
      timeout "${PROFILE_S:-90}" python3 benchmarks/gpu_profile.py --out "$WORK/bench" ;;
    compile)
      log "bench: torch.compile + bf16"
      timeout "${COMPILE_S:-420}" python3 -m irnet_lib.bench --device cuda --modes compile_bf16 \
          --variants standard se condconv --reps 3 --out "$WORK/bench-compile" ;;
    fmnist)
      # one block at a time, packed after each: a stage stopped by its limit keeps finished blocks
      for block in $BLOCKS; do
        log "Fashion-MNIST, $block, $EPOCHS epochs ${FMNIST_ARGS:-}"
        timeout "${FMNIST_S:-380}" python3 -m irnet_lib.reproduce --data fashion-mnist --root "$FM_ROOT" \
            --out "$WORK/$FMNIST_NAME" --figure "$WORK/fig5_$FMNIST_NAME.png" \
            --epochs "$EPOCHS" --warmup-epochs 1 --blocks $block --quiet ${FMNIST_ARGS:-}
        pack
      done ;;
    *) echo "unknown stage $stage (test, bench, project, profile, compile, fmnist)"; exit 2 ;;
  esac
  pack
done
log done
ls -la "$OUT"

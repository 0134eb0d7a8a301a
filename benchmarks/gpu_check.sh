#!/usr/bin/env bash
# Every GPU measurement of the project, in stages that each fit a time limit:
#   test      the CUDA-graph tests (tests/test_graphs.py): a replayed step equals the eager one;
#   fp16      forced fp16 (what Colab's T4 gets) on all of Fashion-MNIST: 2 epochs of the 10-epoch recipe,
#             eager with the gradient scaler; its history says how many steps the scaler skipped;
#   faithful  the paper's recipe as it is (55 epochs, 5 warm-up, lr stepped per epoch, batch 256, lr 0.2)
#             on all of Fashion-MNIST, block after block, each resumed from its checkpoint until done;
#             stops starting epochs after $FAITHFUL_S seconds, so that a call ends in time; packs the
#             fp16 weights of finished blocks for irnet_lib/pretrained. An unfinished run's last.pt
#             comes back in 15 MB pieces (OUT/resume-BLOCK-last.pt.partNN, where it is at most
#             $RESUME_MB MB: the standard and SE runs, not CondConv's 61 MB); a later call on another
#             machine resumes it from those pieces placed in $RESUME_DIR (default gpu-resume/,
#             git-ignored). $FAITHFUL_ARGS: more train flags (a CPU dry run: --device cpu
#             --train-subset 64 --test-subset 32 --epochs 3 --warmup-epochs 1);
#   seeds     the 10-epoch recipe stepped per iteration, $SEEDS seeds per block (error bars);
#   bench     benchmarks/bench.py: the three variants and MobileNetV2 in eager, bf16 (the teaching code),
#             fast_bf16, graph_bf16 (the command line's --fast) and reduce_overhead_bf16 (batch 256), with
#             the 55-epoch projection in graph_bf16 (130k random 64 px images, tensor pipeline);
#   project   the bench in graph_bf16 mode only, with its projection;
#   profile   benchmarks/gpu_profile.py: kernels per step, GPU time against wall time;
#   compile   torch.compile + bf16, with its projection;
#   triton    experiments/triton-depthwise/triton_depthwise.py: CondConv's per-example depthwise conv as Triton kernels,
#             checked against the fold (fp32, bf16), then timed against it per layer and in a whole
#             bf16 training step of the CondConv network (a candidate for the fast layer).
# Everything is packed into OUT/results.tgz (checkpoints left out) after each stage, and the bench
# saves its JSON as it goes, so a stage stopped by its limit keeps what it measured. Training runs
# keep their checkpoints in $WORK (outside OUT): a second call on the same warm machine resumes them.
#
#   bash benchmarks/gpu_check.sh OUT [FASHION_MNIST_ROOT]      # PYTHON: the interpreter (default python3)
#   STAGES="fp16 faithful" FAITHFUL_S=480 bash benchmarks/gpu_check.sh OUT data
#
# Measured before (with the old command names, same recipe): on an H200, test 45 s, profile 55 s,
# bench 145 s, project 90 s; 10 Fashion-MNIST epochs 60 s (standard), 70 s (SE), 135 s (CondConv),
# loading included; on an H100, test 72 s, bench 194 s, 10 epochs 90 s (standard), 106 s (SE). So the
# faithful 55 epochs take roughly 5.5 (standard), 7 (SE) and 12 (CondConv) minutes on either card, and
# the seeds stage about 5 minutes per seed for the three blocks. One device call may run 10 minutes.
set -u
PY=${PYTHON:-python3}
OUT=${1:?usage: gpu_check.sh OUT [FASHION_MNIST_ROOT]}
FM_ROOT=${2:-data}
STAGES=${STAGES:-fp16 faithful}
EPOCHS=${EPOCHS:-10}
SEEDS=${SEEDS:-0 1 2}
FAITHFUL_S=${FAITHFUL_S:-480}
RESUME_DIR=${RESUME_DIR:-gpu-resume}
RESUME_MB=${RESUME_MB:-30}
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
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name())"

for stage in $STAGES; do
  case $stage in
    test)
      log "tests: CUDA graphs"
      # -o addopts=: the project's defaults ask for nbval, which a bare GPU image may lack
      timeout "${TEST_S:-120}" "$PY" -m pytest -q -p no:cacheprovider -o addopts= tests/test_graphs.py 2>&1 | tail -5 ;;
    fp16)
      log "fp16 (forced), all of Fashion-MNIST, 2 epochs of the 10-epoch recipe, eager with the gradient scaler"
      timeout "${FP16_S:-150}" "$PY" -m irnet_lib.train --fast --block standard --data fashion-mnist --root "$FM_ROOT" \
          --precision fp16 --epochs 10 --warmup-epochs 1 --lr-step iteration --max-epochs 2 \
          --out "$WORK/fp16-check/standard" ;;
    faithful)
      runs=$WORK/fashion-mnist-gpu-55ep
      start=$(date +%s)
      for block in $BLOCKS; do   # pieces of a run stopped on another machine: put back together
        dir=$runs/$block
        if [ ! -f "$dir/last.pt" ] && ls "$RESUME_DIR/resume-$block-last.pt.part"* >/dev/null 2>&1; then
          mkdir -p "$dir" && cat "$RESUME_DIR/resume-$block-last.pt.part"* > "$dir/last.pt"
          log "faithful recipe, $block: resuming from the pieces in $RESUME_DIR"
        fi
      done
      for block in $BLOCKS; do
        left=$(( FAITHFUL_S - ($(date +%s) - start) ))
        [ "$left" -gt 20 ] || break
        log "faithful recipe, $block, at most ${left} s in this call (resumes from $runs/$block)"
        timeout --signal=TERM "$left" "$PY" -m irnet_lib.train --fast --block "$block" --data fashion-mnist \
            --root "$FM_ROOT" --out "$runs/$block" --quiet ${FAITHFUL_ARGS:-}
        pack
      done
      rm -f "$OUT"/resume-*-last.pt.part*
      for block in $BLOCKS; do   # an unfinished run's checkpoint, in pieces that OUT lets back
        last=$runs/$block/last.pt
        [ -f "$last" ] || continue
        if "$PY" -c "
import sys; sys.path.insert(0, '.')
from irnet_lib.runs import read_history
run = read_history('$runs/$block')
sys.exit(len(run.history) < run.planned_epochs)"; then continue; fi
        if [ "$(stat -c %s "$last")" -le $(( RESUME_MB * 1000000 )) ]; then
          split -b 15000000 -d "$last" "$OUT/resume-$block-last.pt.part"
          log "faithful recipe, $block: unfinished; its last.pt is back in $(ls "$OUT/resume-$block-last.pt.part"* | wc -l) pieces"
        else
          log "faithful recipe, $block: unfinished; its last.pt ($(stat -c %s "$last") bytes) is too large to come back"
        fi
      done
      "$PY" -m irnet_lib.reproduce --fast --from-results "$runs" \
          --figure "$WORK/fig5_fashion-mnist-gpu-55ep.png" --quiet || true
      for block in $BLOCKS; do   # the fp16 weights of finished runs, each a file of its own (OUT's limits)
        # best.pt, or last.pt where the best epoch's file stayed on a machine the run left
        [ -f "$runs/$block/last.pt" ] && "$PY" -c "
import os, sys, torch; sys.path.insert(0, '.')
from irnet_lib.runs import load_checkpoint, read_history
folder = '$runs/$block'
run = read_history(folder)
if len(run.history) == run.planned_epochs:
    which = 'best' if os.path.exists(folder + '/best.pt') else 'last'
    ckpt = load_checkpoint(f'{folder}/{which}.pt')
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in ckpt['model'].items()},
               f'$OUT/$block-55ep-{which}-fp16.pt')"
      done ;;
    seeds)
      for seed in $SEEDS; do
        for block in $BLOCKS; do
          log "10 epochs per iteration, $block, seed $seed"
          timeout "${SEED_S:-240}" "$PY" -m irnet_lib.train --fast --block "$block" --data fashion-mnist --root "$FM_ROOT" \
              --epochs 10 --warmup-epochs 1 --lr-step iteration --seed "$seed" --quiet \
              --out "$WORK/fashion-mnist-gpu-10ep-seeds/seed$seed/$block"
          pack
        done
      done ;;
    project)
      log "bench: graph_bf16 only, with the projection"
      timeout "${PROJECT_S:-150}" "$PY" benchmarks/bench.py --device cuda --modes graph_bf16 \
          --variants standard se condconv --reps 3 --out "$WORK/bench-projection" ;;
    bench)
      log "bench: eager, bf16, fast_bf16, graph_bf16, reduce_overhead_bf16, MobileNetV2; projection"
      timeout "${BENCH_S:-420}" "$PY" benchmarks/bench.py --device cuda \
          --modes eager bf16 fast_bf16 graph_bf16 reduce_overhead_bf16 --reps 3 --out "$WORK/bench" ;;
    profile)
      log "profile: kernels per training step"
      timeout "${PROFILE_S:-90}" "$PY" benchmarks/gpu_profile.py --out "$WORK/bench" ;;
    compile)
      log "bench: torch.compile + bf16"
      timeout "${COMPILE_S:-420}" "$PY" benchmarks/bench.py --device cuda --modes compile_bf16 \
          --variants standard se condconv --reps 3 --out "$WORK/bench-compile" ;;
    triton)
      log "candidate: Triton per-example depthwise kernels for CondConv"
      timeout "${TRITON_S:-240}" "$PY" experiments/triton-depthwise/triton_depthwise.py --check --bench --out "$WORK/triton-depthwise" ;;
    fmnist)
      # one block at a time, packed after each: a stage stopped by its limit keeps finished blocks
      for block in $BLOCKS; do
        log "Fashion-MNIST, $block, $EPOCHS epochs ${FMNIST_ARGS:-}"
        timeout "${FMNIST_S:-380}" "$PY" -m irnet_lib.reproduce --fast --data fashion-mnist --root "$FM_ROOT" \
            --out "$WORK/$FMNIST_NAME" --figure "$WORK/fig5_$FMNIST_NAME.png" \
            --epochs "$EPOCHS" --warmup-epochs 1 --blocks $block --quiet ${FMNIST_ARGS:-}
        pack
      done ;;
    *) echo "unknown stage $stage (test, fp16, faithful, seeds, bench, project, profile, compile, triton, fmnist)"; exit 2 ;;
  esac
  pack
done
log done
ls -la "$OUT"

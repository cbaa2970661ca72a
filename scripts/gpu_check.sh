#!/usr/bin/env bash
# CUDA checks on a GPU machine: builds rmnet against that machine's own torch (no OpenCV, no tests:
# such machines have neither OpenCV nor GoogleTest), then
#   - trains a CIFAR-size model a few hundred steps on the GPU: fp32, fp16 autocast with dynamic
#     loss scaling, channels_last, bf16 (images/s and accuracy from the logs),
#   - two ranks on the one GPU over Gloo with --sync-bn against one process (prediction agreement),
#   - rmnet bench on CUDA (residual vs RM-converted, fp32 and fp16) next to PyTorch eager,
#   - the RM forms on the cudagraph runtime against eager and torchscript (fp32, fp16; channels-last).
# Usage: scripts/gpu_check.sh DEPS_DIR OUT_DIR [SECTION...]   (sections: paper train dp bench
# cudagraph python; default all). DEPS_DIR holds usr/include + usr/share/cmake for nlohmann-json, CLI11 and zlib.h,
# and fmnist/ with the Fashion-MNIST .gz files (docs/BENCHMARKS.md, "CUDA", says how it was made).
# OUT_DIR gets summary.txt, bench_*.json and logs.tgz (everything else).
set -uo pipefail
deps=$(cd "$1" && pwd)
final=$2
shift 2
sections=" ${*:-paper train dp bench cudagraph python} "
want() { [[ "$sections" == *" $1 "* ]]; }
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=/tmp/rmnet-gpu-work
rm -rf "$out"
mkdir -p "$out" "$final"
summary="$out/summary.txt"
finish() {
  cp "$summary" "$out"/bench_*.json "$final"/ 2>/dev/null
  tar czf "$final/logs.tgz" -C "$out" --exclude='*.rmnet' --exclude='*.ckpt' .
}
trap finish EXIT
log() { echo "== $*" | tee -a "$summary"; }
log "$(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
log "torch $(python3 -c 'import torch; print(torch.__version__, torch.version.cuda)'), $(nproc) CPU cores"

build=/tmp/rmnet-gpu-build
zlib=$(ls /usr/lib/x86_64-linux-gnu/libz.so* /lib/x86_64-linux-gnu/libz.so* 2>/dev/null | head -n 1)
t0=$(date +%s)
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRMNET_PYTHON=python3 \
  -DRMNET_WITH_OPENCV=OFF -DRMNET_BUILD_BENCHMARKS=OFF -DTORCH_CUDA_ARCH_LIST=9.0 \
  -DCMAKE_PREFIX_PATH="$deps/usr" -DZLIB_INCLUDE_DIR="$deps/usr/include" -DZLIB_LIBRARY="$zlib" \
  > "$out/configure.log" 2>&1 || { tail -n 40 "$out/configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" --target rmnet_cli > "$out/build.log" 2>&1 ||
  { grep -m 30 -B2 -A6 "error" "$out/build.log"; exit 1; }
log "built in $(( $(date +%s) - t0 )) s"
rmnet=$build/rmnet
data=$deps/fmnist

if want paper; then
# ---- the paper's protocol (batch 128, 50 warm-up + 50 timed): ResNet-34 vs RMNet 26x3_32 at 32x32,
# and Table 1's ImageNet pairs at 224x224. Results go straight to OUT_DIR (a run cut short keeps
# what it finished).
paper() {  # NAME [bench flags]
  local name=$1
  shift
  "$rmnet" --threads 8 bench --convert --device cuda --batch 128 --warmup 50 --iters 50 "$@" \
    --json "$final/paper_$name.json" 2>&1 | grep -v ETA >> "$final/paper.txt"
  log "paper $name rc=$?"
}
paper c32_fp32 --arch resnet34_cifar --arch rmnet26x3_32 --input-size 32
paper c32_fp16cl --arch resnet34_cifar --arch rmnet26x3_32 --input-size 32 --dtype fp16 --channels-last
paper r50_fp16cl --arch resnet50 --arch rmnet50x6_32 --arch rmnet41x5_16 --input-size 224 --dtype fp16 --channels-last
paper r101_fp16cl --arch resnet101 --arch rmnet101x6_16 --input-size 224 --dtype fp16 --channels-last
paper r152_fp16cl --arch resnet152 --arch rmnet152x6_32 --input-size 224 --dtype fp16 --channels-last
fi

if want train; then
# ---- training: 300 steps of 128 images (38,400 Fashion-MNIST images, 28x28) --------------------
train() {
  local name=$1 arch=$2
  shift 2
  local t=$(date +%s%N)
  "$rmnet" --threads 8 train --arch "$arch" --dataset fashion-mnist --data "$data" --epochs 1 \
    --max-train-samples 38400 --batch-size 128 --lr 0.1 --workers 12 --seed 1 "$@" --out "$out/run_$name" \
    > "$out/train_$name.log" 2>&1
  local rc=$?
  log "train $name ($arch $*) rc=$rc wall $(( ($(date +%s%N) - t) / 1000000 )) ms:" \
    "$(grep -E '^epoch 1/1: ' "$out/train_$name.log" | tail -n 1)"
  [ $rc -eq 0 ] || tail -n 20 "$out/train_$name.log"
}
train r20_fp32 resnet20 --device cuda
train r20_fp16 resnet20 --device cuda --amp fp16
train r18_fp32 resnet18_cifar --device cuda
train r18_fp16 resnet18_cifar --device cuda --amp fp16
train r18_fp16_cl resnet18_cifar --device cuda --amp fp16 --channels-last
train r18_bf16 resnet18_cifar --device cuda --amp bf16
fi

if want dp; then
# ---- two ranks on one GPU (Gloo, CUDA tensors) with synchronised BN vs one process -----------
# --deterministic: with PyTorch's defaults (TF32 convolutions, non-deterministic cuDNN kernels) two
# identical single-process runs of 50 steps agreed on only 89% of the test predictions, so no
# comparison means anything. A second single-process run checks that the runs now repeat.
export CUBLAS_WORKSPACE_CONFIG=:4096:8
dp_args=(--threads 4 train --arch resnet20 --dataset fashion-mnist --data "$data" --epochs 1 --max-train-samples 2560
         --batch-size 128 --lr 0.1 --workers 4 --seed 1 --device cuda:0 --deterministic)
"$rmnet" "${dp_args[@]}" --out "$out/sp" > "$out/sp.log" 2>&1
"$rmnet" "${dp_args[@]}" --out "$out/sp2" > "$out/sp2.log" 2>&1
two_ranks() {  # NAME PORT [extra train flags]: two ranks on cuda:0 over Gloo
  local name=$1 port=$2
  shift 2
  WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port RANK=1 LOCAL_RANK=1 \
    "$rmnet" "${dp_args[@]}" --dist-backend gloo "$@" --out "$out/$name" > "$out/${name}1.log" 2>&1 &
  local p1=$!
  WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port RANK=0 LOCAL_RANK=0 \
    "$rmnet" "${dp_args[@]}" --dist-backend gloo "$@" --out "$out/$name" > "$out/${name}0.log" 2>&1
  local rc0=$?
  wait $p1
  local rc1=$?
  log "2 ranks gloo cuda:0 $* rc=$rc0/$rc1: $(grep -E 'data parallel|^epoch 1/1: ' "$out/${name}0.log" | tr '\n' ' ')"
  [ $rc0 -eq 0 ] || tail -n 15 "$out/${name}0.log" "$out/${name}1.log"
}
two_ranks dp 29517 --sync-bn
two_ranks dpl 29518
log "1 process: $(grep -E '^epoch 1/1: ' "$out/sp.log")"
log "1 process again: $(grep -E '^epoch 1/1: ' "$out/sp2.log")"
for pair in "sp2 sp" "dp sp" "dpl sp"; do
  set -- $pair
  "$rmnet" --threads 8 eval --model "$out/$1/final.rmnet" --compare "$out/$2/final.rmnet" --dataset fashion-mnist \
    --data "$data" 2>&1 | tee -a "$summary"
done
unset CUBLAS_WORKSPACE_CONFIG
fi

# ---- inference speed on CUDA -----------------------------------------------------------------
if want bench; then
for dt in fp32 fp16; do
  for cl in "" --channels-last; do
    "$rmnet" --threads 8 bench --arch resnet18 --arch resnet50 --arch mobilenet_v2 --convert --device cuda \
      --dtype $dt $cl --batch 128 --input-size 224 --warmup 20 --iters 50 --json "$out/bench_${dt}${cl:+_cl}.json" \
      > "$out/bench_${dt}${cl:+_cl}.log" 2>&1
    log "rmnet bench $dt $cl rc=$?"
    grep -v "ETA" "$out/bench_${dt}${cl:+_cl}.log" >> "$summary"
  done
done
fi
# ---- the cudagraph runtime against eager and torchscript on the RM forms (paper's protocol) ----
if want cudagraph; then
for net in resnet18 resnet50 mobilenet_v2; do
  "$rmnet" init --arch $net --random-bn --out "$out/$net.rmnet" > /dev/null &&
    "$rmnet" convert --model "$out/$net.rmnet" --out "$out/${net}_rm.rmnet" > /dev/null
  for dt in fp32 fp16; do
    for rt in eager torchscript cudagraph; do
      "$rmnet" --threads 8 bench --model "$out/${net}_rm.rmnet" --runtime $rt --device cuda --dtype $dt \
        --channels-last --batch 128 --input-size 224 --warmup 20 --iters 50 \
        --json "$out/bench_cg_${net}_${dt}_${rt}.json" > "$out/cg_${net}_${dt}_${rt}.log" 2>&1
      log "cudagraph section: $net RM $dt $rt rc=$? $(grep -o '[0-9.]* images/s' "$out/cg_${net}_${dt}_${rt}.log" | head -n 1)"
    done
  done
done
fi
if want python; then
python3 - >> "$summary" 2>&1 <<'EOF'
import time, torch, torchvision
for name in ["resnet18", "resnet50", "mobilenet_v2"]:
    for dt in [torch.float32, torch.float16]:
        for cl in [False, True]:
            m = getattr(torchvision.models, name)().cuda().eval()
            x = torch.randn(128, 3, 224, 224, device="cuda")
            if cl:
                m, x = m.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=dt == torch.float16):
                for _ in range(20):
                    m(x)
                torch.cuda.synchronize()
                t = time.perf_counter()
                for _ in range(50):
                    m(x)
                torch.cuda.synchronize()
            print(f"pytorch eager {name} {'fp16 autocast' if dt == torch.float16 else 'fp32'}"
                  f"{' channels_last' if cl else ''}: {128 * 50 / (time.perf_counter() - t):.0f} img/s")
EOF
fi
log "done $(date -u +%FT%TZ)"

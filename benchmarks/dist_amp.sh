#!/usr/bin/env bash
# Data parallelism and autocast on this machine's CPU: (a) 2 processes x 1 thread (Gloo) against
# 1 process x 2 threads on the same global batch; (b) bf16 autocast against fp32, speed and test
# accuracy. Numbers are the training images/s of metrics.jsonl (evaluation excluded).
# Usage: benchmarks/dist_amp.sh RMNET_BINARY WORK_DIR [ARCH] [SAMPLES] [EPOCHS]
set -euo pipefail
rmnet=$1
work=$2
arch=${3:-resnet8}
samples=${4:-12800}
epochs=${5:-1}
rm -rf "$work"
mkdir -p "$work"
common=(train --arch "$arch" --dataset fashion-mnist --epochs "$epochs" --max-train-samples "$samples"
        --batch-size 64 --lr 0.05 --workers 1 --seed 1)
ips() { python3 -c "import json,sys; l=[json.loads(x) for x in open(sys.argv[1])]; \
print('%.0f img/s, %.1f s train, test top1 %.2f%%' % (sum(x['train_images_per_second'] for x in l)/len(l), \
sum(x['train_seconds'] for x in l), 100*l[-1]['test_top1']))" "$1/metrics.jsonl"; }

"$rmnet" --threads 2 "${common[@]}" --out "$work/1x2" > "$work/1x2.log"
echo "1 process x 2 threads:      $(ips "$work/1x2")"

port=$((20000 + RANDOM % 20000))
export WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port OMP_NUM_THREADS=1
RANK=1 "$rmnet" --threads 1 "${common[@]}" --out "$work/2x1" > "$work/2x1.r1.log" &
RANK=0 "$rmnet" --threads 1 "${common[@]}" --out "$work/2x1" > "$work/2x1.log"
wait
unset WORLD_SIZE MASTER_ADDR MASTER_PORT OMP_NUM_THREADS
echo "2 processes x 1 thread:     $(ips "$work/2x1") ($(grep -o "gradient averaging.*" "$work/2x1.log"))"

"$rmnet" --threads 2 "${common[@]}" --amp bf16 --out "$work/bf16" > "$work/bf16.log"
echo "1 process x 2 threads bf16: $(ips "$work/bf16")"
"$rmnet" --threads 2 "${common[@]}" --amp bf16 --channels-last --out "$work/bf16cl" > "$work/bf16cl.log"
echo "  ... bf16 + channels_last: $(ips "$work/bf16cl")"

#!/usr/bin/env bash
# Ctrl-C during `rmnet train` writes a checkpoint and exits with 130; --resume finishes the run.
set -euo pipefail
rmnet=$1
work=$2
rm -rf "$work"
mkdir -p "$work"
"$rmnet" train --arch resnet8 --dataset fashion-mnist --epochs 2 --max-train-samples 2560 --batch-size 32 \
  --workers 1 --out "$work/run" > "$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do  # wait for the first progress line (up to 60 s)
  grep -q "epoch 1/2" "$work/log" 2>/dev/null && break
  sleep 0.1
done
kill -INT "$pid"
set +e
wait "$pid"
rc=$?
set -e
cat "$work/log"
[ "$rc" -eq 130 ] || { echo "expected exit status 130 after SIGINT, got $rc"; exit 1; }
grep -q "interrupted at epoch 1" "$work/log" || { echo "no interruption message"; exit 1; }
[ -f "$work/run/checkpoint.ckpt" ] || { echo "no checkpoint written on SIGINT"; exit 1; }
"$rmnet" train --resume "$work/run/checkpoint.ckpt" --epochs 2 --max-train-samples 2560 --batch-size 32 \
  --workers 1 --out "$work/run" | tee "$work/log2"
grep -q "resuming" "$work/log2"
grep -q "epoch 2/2:" "$work/log2"
[ -f "$work/run/final.rmnet" ]
echo "ok"

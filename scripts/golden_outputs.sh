#!/usr/bin/env bash
# Writes what the CLI produces for a fixed set of small random networks (convert with and without
# BN, prune, reconstruct, quantize, every export, summaries, per-runtime predictions) and a
# SHA-256 list of it, so two builds can be compared byte for byte (refactors must not change any
# output):  scripts/golden_outputs.sh BUILD/rmnet OUTDIR   then   diff OUTDIR1/SHA256 OUTDIR2/SHA256
# ARCHS="resnet8 se_resnet20" limits it to those networks (the whole set takes about an hour on
# one core: every evaluation runs the full Fashion-MNIST test set single-threaded). The quantized
# model files (*.q.rmnet) record their pass timings in their metadata and differ run to run; their
# info, exports and predictions do not. EVAL=0 skips the evaluations (the models and exports only).
set -euo pipefail
B=$1 O=$2
mkdir -p "$O"
r() { "$B" --threads 1 "$@" > /dev/null; }
ds=(--dataset fashion-mnist)
for arch in ${ARCHS:-resnet8 se_resnet20 mobilenet_v2_cifar preact_resnet20 repvgg8_cifar mobilenet_v1_cifar rmnet26x3_32}; do
  a=$O/$arch
  r init --arch "$arch" --in-channels 1 --num-classes 10 --random-bn --seed 3 --out "$a.rmnet"
  r convert --model "$a.rmnet" --keep-bn --out "$a.kbn.rmnet" --onnx "$a.kbn.onnx" --torchscript "$a.kbn.pt" --pth "$a.kbn.pth"
  r convert --model "$a.rmnet" --out "$a.plain.rmnet" --onnx "$a.plain.onnx" --torchscript "$a.plain.pt"
  "$B" info --model "$a.plain.rmnet" > "$a.plain.info.txt"
  "$B" info --model "$a.kbn.rmnet" > "$a.kbn.info.txt"
  r prune --model "$a.kbn.rmnet" --ratio 0.3 --keep-one --out "$a.pruned.rmnet" --json "$a.pruned.json" --bench-iters 0
  r prune --model "$a.kbn.rmnet" --target-macs 0.6 --keep-one --reconstruct --calib-dataset fashion-mnist --calib-images 64 --reconstruct-positions 64 \
    --out "$a.recon.rmnet" --bench-iters 0
  r quantize --model "$a.plain.rmnet" --calib-dataset fashion-mnist --calib-images 64 --out "$a.q.rmnet" --json "$a.q.json"
  r export --model "$a.q.rmnet" --onnx "$a.q.onnx"
  "$B" info --model "$a.q.rmnet" > "$a.q.info.txt"
  [ "${EVAL:-1}" = 0 ] && continue
  for m in plain pruned recon; do
    for rt in eager onednn torchscript; do
      r eval --model "$a.$m.rmnet" "${ds[@]}" --runtime $rt --predictions "$a.$m.$rt.pred" --json "$a.$m.$rt.json"
    done
  done
  r eval --model "$a.q.rmnet" "${ds[@]}" --runtime int8 --predictions "$a.q.int8.pred" --json "$a.q.int8.json"
done
# JSON reports carry timings: hash them without their time fields
cd "$O"
for f in *; do
  case "$f" in
    SHA256) ;;
    *.json) echo "$(python3 -c 'import json,sys
def strip(o):
    if isinstance(o, dict): return {k: strip(v) for k, v in o.items() if not any(t in k for t in ("seconds", "ms", "time", "images_per_s", "date"))}
    if isinstance(o, list): return [strip(v) for v in o]
    return o
print(json.dumps(strip(json.load(open(sys.argv[1]))), sort_keys=True))' "$f" | sha256sum | cut -c1-64)  $f" ;;
    *) sha256sum "$f" ;;
  esac
done > SHA256

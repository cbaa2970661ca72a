#!/usr/bin/env bash
# The main job, one command on a fresh machine: set-up, build, train a CIFAR-style ResNet on
# Fashion-MNIST (real data from Debian's dataset-fashion-mnist), convert it to a plain network,
# evaluate both on the 10,000 test images, and print a side-by-side table. Writes
# runs/demo/summary.json (residual_top1, plain_top1, agreement, train_seconds, ...).
#   RMNET_DEMO_DIR      output folder (default: runs/demo)
#   RMNET_DEMO_EPOCHS   epochs (default: 8)       RMNET_DEMO_ARCH  architecture (default: resnet8)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/env.sh"
bash "$here/setup.sh"
cmake -S "$RMNET_ROOT" -B "$RMNET_BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRMNET_PYTHON="$RMNET_PYTHON" >/dev/null
cmake --build "$RMNET_BUILD_DIR" -j2 --target rmnet_cli
rmnet="$RMNET_BUILD_DIR/rmnet"
out=${RMNET_DEMO_DIR:-$RMNET_ROOT/runs/demo}
epochs=${RMNET_DEMO_EPOCHS:-8}
arch=${RMNET_DEMO_ARCH:-resnet8}
rm -rf "$out"
mkdir -p "$out"

echo "== train $arch on Fashion-MNIST ($epochs epochs)"
"$rmnet" train --arch "$arch" --dataset fashion-mnist --epochs "$epochs" --batch-size 128 --lr 0.1 \
  --weight-decay 5e-4 --schedule cosine --warmup-epochs 0.2 --workers 2 --seed 0 --out "$out"
echo "== convert to a plain network (BN folded)"
"$rmnet" convert --model "$out/final.rmnet" --out "$out/plain.rmnet" --verify-size 28
echo "== evaluate both on the test set"
"$rmnet" eval --model "$out/final.rmnet" --compare "$out/plain.rmnet" --dataset fashion-mnist --json "$out/eval.json"

"$RMNET_PYTHON" - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
ev = json.loads((out / "eval.json").read_text())
tr = json.loads((out / "train_summary.json").read_text())
r, p = ev["model"], ev["compare"]
summary = {
    "dataset": "fashion-mnist", "arch": r["arch"], "epochs": tr["epochs"],
    "residual_top1": r["top1"], "plain_top1": p["top1"], "agreement": ev["agreement"],
    "residual_top5": r["top5"], "plain_top5": p["top5"],
    "residual_parameters": r["parameters"], "plain_parameters": p["parameters"],
    "residual_images_per_second": r["images_per_second"], "plain_images_per_second": p["images_per_second"],
    "residual_runtime": r["runtime"], "plain_runtime": p["runtime"],
    "train_seconds": tr["train_seconds"],
}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print()
print(f"{'':24}{'residual':>14}{'plain':>14}")
print(f"{'top-1 (test)':24}{100*r['top1']:>13.2f}%{100*p['top1']:>13.2f}%")
print(f"{'top-5 (test)':24}{100*r['top5']:>13.2f}%{100*p['top5']:>13.2f}%")
print(f"{'parameters':24}{r['parameters']:>14,}{p['parameters']:>14,}")
print(f"{'images/s (eval)':24}{r['images_per_second']:>14.0f}{p['images_per_second']:>14.0f}")
print(f"{'runtime':24}{r['runtime']:>14}{p['runtime']:>14}")
print(f"prediction agreement: {ev['agreement']:.4f}    training time: {tr['train_seconds']:.0f} s")
print(f"wrote {out / 'summary.json'}")
PY

#!/usr/bin/env bash
# An example conversion: a ResNet-18 with random BN statistics (as if trained), converted to a
# plain network in both forms, then inspected. Builds first if needed.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/env.sh"
if [ ! -x "$RMNET_BUILD_DIR/rmnet" ]; then
  bash "$here/setup.sh"
  cmake -S "$RMNET_ROOT" -B "$RMNET_BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRMNET_PYTHON="$RMNET_PYTHON"
  cmake --build "$RMNET_BUILD_DIR" -j2 --target rmnet_cli
fi
rmnet="$RMNET_BUILD_DIR/rmnet"
out=${RMNET_EXAMPLE_DIR:-$RMNET_BUILD_DIR/example}
mkdir -p "$out"
set -x
"$rmnet" init --arch resnet18_cifar --num-classes 10 --random-bn --track-stats --seed 1 --out "$out/resnet18.rmnet"
"$rmnet" convert --model "$out/resnet18.rmnet" --out "$out/resnet18_plain.rmnet"
"$rmnet" convert --model "$out/resnet18.rmnet" --out "$out/resnet18_plain_bn.rmnet" --keep-bn --downsample 1
"$rmnet" info --model "$out/resnet18_plain.rmnet" --input-size 32

#!/usr/bin/env python3
"""Training speed, rmnet against PyTorch, side by side in one run.

Trains the same CIFAR-style ResNet (projection shortcuts, 1 input channel) on the same
Fashion-MNIST images, with the same batch size, thread count, augmentation (pad-2 random crop +
horizontal flip) and optimizer (SGD, momentum 0.9, wd 5e-4, cosine lr), once with PyTorch eager
(the torch of the project's virtual environment) and once with `rmnet train`, and reports the
training images/s of both (forward + backward + step, data preparation included).

Usage: scripts/compare_training.py [--arch resnet8] [--samples 12800] [--batch 128] [--threads 2]
                                   [--rmnet build/rmnet] [--json out.json]
"""
import argparse
import gzip
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FMNIST = pathlib.Path("/usr/share/datasets/fashion-mnist")
DEPTHS = {"resnet8": 1, "resnet14": 2, "resnet20": 3, "resnet32": 5}


def read_idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class CifarResNet(nn.Module):
    def __init__(self, n, num_classes=10, in_channels=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for i, w in enumerate((16, 32, 64)):
            blocks = []
            for b in range(n):
                blocks.append(Block(cin, w, 2 if i > 0 and b == 0 else 1))
                cin = w
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def augment(x, gen):
    """pad-2 random crop + horizontal flip, per sample, vectorised."""
    b, _, h, w = x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    dy = torch.randint(0, 5, (b,), generator=gen)
    dx = torch.randint(0, 5, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(b, 1, h, w)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(b, 1, h, w)
    out = padded[torch.arange(b)[:, None, None, None], torch.zeros_like(rows), rows, cols]
    flip = torch.rand(b, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def pytorch_images_per_second(arch, samples, batch, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    images = read_idx(FMNIST / "train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)[:samples]
    labels = read_idx(FMNIST / "train-labels-idx1-ubyte.gz", 8)[:samples]
    x_all = (torch.from_numpy(images.copy()).float() / 255 - 0.2860) / 0.3530
    y_all = torch.from_numpy(labels.astype(np.int64))
    model = CifarResNet(DEPTHS[arch])
    steps = samples // batch
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y_all), generator=gen)
    model.train()
    t0 = time.perf_counter()
    for s in range(steps):
        idx = perm[s * batch:(s + 1) * batch]
        x, y = augment(x_all[idx], gen), y_all[idx]
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
    return steps * batch / (time.perf_counter() - t0)


def rmnet_images_per_second(rmnet, arch, samples, batch, threads):
    with tempfile.TemporaryDirectory() as out:
        cmd = [rmnet, "--threads", str(threads), "train", "--arch", arch, "--dataset", "fashion-mnist",
               "--epochs", "1", "--batch-size", str(batch), "--max-train-samples", str(samples),
               "--workers", "2", "--out", out]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        line = pathlib.Path(out, "metrics.jsonl").read_text().splitlines()[-1]
        return json.loads(line)["train_images_per_second"]


def main():
    root = pathlib.Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet8", choices=sorted(DEPTHS))
    ap.add_argument("--samples", type=int, default=12800)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rmnet", default=str(root / "build" / "rmnet"))
    ap.add_argument("--json")
    a = ap.parse_args()
    py = pytorch_images_per_second(a.arch, a.samples, a.batch, a.threads)
    rm = rmnet_images_per_second(a.rmnet, a.arch, a.samples, a.batch, a.threads)
    print(f"{a.arch}, Fashion-MNIST 28x28, batch {a.batch}, {a.threads} threads, {a.samples} images, torch {torch.__version__}")
    print(f"{'PyTorch eager (Python)':28}{py:10.0f} images/s")
    print(f"{'rmnet train (C++)':28}{rm:10.0f} images/s   ratio {rm / py:.2f}x")
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps({"arch": a.arch, "batch": a.batch, "threads": a.threads,
                                                    "pytorch_images_per_second": py,
                                                    "rmnet_images_per_second": rm}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Accuracy vs speed plot (PNG) from rmnet's own JSON outputs.

Each point is one model: its top-1 from `rmnet eval --json` and its images/s from `rmnet bench --json`
(the first model of that run, or the one whose name matches), or given directly:

    scripts/plot_speed.py --out docs/accuracy_speed.png \
        --pair resnet20 eval_r20.json bench_r20.json \
        --pair "resnet20 (RM, pruned)" eval_pruned.json bench_pruned.json \
        --point "mobilenet_v2_cifar" 91.2 4100
"""
import argparse
import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def bench_ips(path, name=None):
    models = json.loads(pathlib.Path(path).read_text())["models"]
    for m in models:
        if name and m["name"] == name:
            return m["images_per_second"]
    return models[0]["images_per_second"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", nargs=3, action="append", default=[], metavar=("LABEL", "EVAL_JSON", "BENCH_JSON"))
    ap.add_argument("--point", nargs=3, action="append", default=[], metavar=("LABEL", "TOP1_PERCENT", "IMAGES_PER_S"))
    ap.add_argument("--title", default="Accuracy vs speed")
    ap.add_argument("--out", required=True, help="PNG file")
    a = ap.parse_args()
    pts = []
    for label, ev, bn in a.pair:
        top1 = 100 * json.loads(pathlib.Path(ev).read_text())["model"]["top1"]
        pts.append((label, top1, bench_ips(bn)))
    for label, top1, ips in a.point:
        pts.append((label, float(top1), float(ips)))
    if not pts:
        raise SystemExit("no points: give --pair or --point")
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, top1, ips in pts:
        ax.scatter(ips, top1)
        ax.annotate(label, (ips, top1), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("images/s (rmnet bench)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(a.title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(a.out)
    print(f"wrote {a.out} ({len(pts)} points)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Figure 5 of the paper at small scale: accuracy against depth for RepVGG (plain, re-parameterised)
and ResNet, the latter also converted by the RM operation into a plain RMNet of the same function.

Trains resnet<D> and repvgg<D>_cifar (same depth D, same widths 16/32/64) briefly on Fashion-MNIST,
converts every ResNet to a plain network, evaluates all on the 10,000 test images, and writes a
Markdown table (--table) and a PNG plot (--plot).

Usage: experiments/depth_study.py RMNET_BINARY [--depths 8 20 56] [--epochs 2] [--samples 12000]
                               [--work runs/depth] [--table docs/depth_study.md] [--plot docs/depth_study.png]
"""
import argparse
import json
import pathlib
import subprocess
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def run(cmd):
    print("$", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rmnet")
    ap.add_argument("--depths", type=int, nargs="+", default=[8, 20, 56])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--samples", type=int, default=12000, help="training images used (0 = all 60,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="runs/depth")
    ap.add_argument("--table", default="docs/depth_study.md")
    ap.add_argument("--plot", default="docs/depth_study.png")
    a = ap.parse_args()
    work = pathlib.Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for d in a.depths:
        for family, arch in (("ResNet", f"resnet{d}"), ("RepVGG", f"repvgg{d}_cifar")):
            out = work / arch
            t0 = time.time()
            run([a.rmnet, "train", "--arch", arch, "--dataset", "fashion-mnist", "--epochs", a.epochs,
                 "--batch-size", 128, "--lr", 0.1, "--weight-decay", 5e-4, "--schedule", "cosine",
                 "--warmup-epochs", 0.2, "--workers", 2, "--seed", a.seed, "--max-train-samples", a.samples,
                 "--out", out])
            seconds = time.time() - t0
            plain = out / "plain.rmnet"
            run([a.rmnet, "convert", "--model", out / "final.rmnet", "--out", plain, "--verify-size", 28])
            run([a.rmnet, "eval", "--model", out / "final.rmnet", "--compare", plain, "--dataset", "fashion-mnist",
                 "--json", out / "eval.json"])
            ev = json.loads((out / "eval.json").read_text())
            rows.append({"depth": d, "family": family, "arch": arch, "top1": ev["model"]["top1"],
                         "plain_top1": ev["compare"]["top1"], "agreement": ev["agreement"],
                         "parameters": ev["model"]["parameters"], "train_seconds": round(seconds, 1)})
            (work / "results.json").write_text(json.dumps(rows, indent=2) + "\n")

    lines = [f"Depth study: {a.epochs} epochs on {a.samples or 60000} Fashion-MNIST training images, "
             f"top-1 on the 10,000 test images (seed {a.seed}).", "",
             "| depth | ResNet | RMNet (ResNet converted, plain) | RepVGG (plain) | ResNet agreement with RMNet |",
             "|---:|---:|---:|---:|---:|"]
    for d in a.depths:
        r = next(x for x in rows if x["depth"] == d and x["family"] == "ResNet")
        v = next(x for x in rows if x["depth"] == d and x["family"] == "RepVGG")
        lines.append(f"| {d} | {100*r['top1']:.2f}% | {100*r['plain_top1']:.2f}% | {100*v['top1']:.2f}% | "
                     f"{r['agreement']:.4f} |")
    table = "\n".join(lines) + "\n"
    pathlib.Path(a.table).write_text(table)
    print(table)

    fig, ax = plt.subplots(figsize=(6, 4))
    for family, label, style in (("ResNet", "ResNet = RMNet (exact conversion)", "o-"), ("RepVGG", "RepVGG", "s--")):
        pts = [(x["depth"], 100 * x["top1"]) for x in rows if x["family"] == family]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
    ax.set_xlabel("depth (weighted layers)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"Fashion-MNIST, {a.epochs} epochs, {a.samples or 60000} images")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.plot, dpi=120)
    print("wrote", a.table, a.plot)


if __name__ == "__main__":
    main()

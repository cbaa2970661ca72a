#!/usr/bin/env python3
"""Figure 6 of the paper at small scale: network slimming of a residual network (only channels inside
blocks can go) against slimming of its plain RM form (every channel is free), on the same weights.

Trains ResNet with sparsity (L1 on BN scales and shortcut scales) on Fashion-MNIST, converts it to the
plain BN-kept form, prunes the residual network (--residual-baseline) and the plain network at several
global ratios, fine-tunes each briefly, evaluates on the 10,000 test images and measures images/s
(CPU, batch 64). Writes a Markdown table (--table) and a PNG plot (--plot): accuracy against the
fraction of parameters removed, and accuracy against images/s.

Usage: scripts/prune_study.py RMNET_BINARY [--arch resnet20] [--epochs 3] [--samples 12000]
                               [--ratios 0.3 0.5 0.7] [--sparsity 1e-4] [--finetune-epochs 1]
                               [--work runs/prune] [--table docs/pruning_table.md] [--plot docs/pruning.png]
"""
import argparse
import json
import pathlib
import subprocess

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def run(cmd):
    print("$", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rmnet")
    ap.add_argument("--arch", default="resnet20")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--samples", type=int, default=12000, help="training images used (0 = all 60,000)")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--sparsity", type=float, default=1e-4)
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--bench-iters", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="runs/prune")
    ap.add_argument("--table", default="docs/pruning_table.md")
    ap.add_argument("--plot", default="docs/pruning.png")
    a = ap.parse_args()
    work = pathlib.Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    common = ["--dataset", "fashion-mnist", "--batch-size", 128, "--workers", 2, "--seed", a.seed,
              "--max-train-samples", a.samples]

    base = work / "base"
    run([a.rmnet, "train", "--arch", a.arch, "--epochs", a.epochs, "--lr", 0.1, "--schedule", "cosine",
         "--warmup-epochs", 0.2, "--sparsity", a.sparsity, "--out", base, *common])
    plain = base / "plain.rmnet"
    run([a.rmnet, "convert", "--model", base / "final.rmnet", "--keep-bn", "--out", plain, "--verify-size", 28])

    def evaluate(model, tag):
        js = work / f"eval_{tag}.json"
        run([a.rmnet, "eval", "--model", model, "--dataset", "fashion-mnist", "--json", js])
        return json.loads(js.read_text())["model"]["top1"]

    rows = []
    unpruned_top1 = evaluate(plain, "unpruned")
    for ratio in a.ratios:
        for form in ("residual", "plain"):
            tag = f"{form}_{ratio}"
            pruned = work / f"{tag}.rmnet"
            info = work / f"{tag}.json"
            src = base / "final.rmnet" if form == "residual" else plain
            extra = ["--residual-baseline"] if form == "residual" else []
            run([a.rmnet, "prune", "--model", src, "--out", pruned, "--ratio", ratio, "--keep-one", *extra,
                 "--input-size", 28, "--bench-iters", a.bench_iters, "--json", info])
            p = json.loads(info.read_text())
            top1_pruned = evaluate(pruned, tag + "_nofinetune")
            ft = work / f"ft_{tag}"
            run([a.rmnet, "train", "--init", pruned, "--epochs", a.finetune_epochs, "--lr", 0.01,
                 "--schedule", "cosine", "--out", ft, *common])
            top1 = evaluate(ft / "final.rmnet", tag + "_finetuned")
            removed = (1 - p["residual_params_after"] / p["residual_params_before"]) if form == "residual" \
                else p["params_ratio_removed"]
            rows.append({"form": form, "ratio": ratio, "params_removed": removed,
                         "params_after": p.get("residual_params_after", p["params_after"]),
                         "plain_params_after": p["params_after"], "flops_after": p["flops_after"],
                         "images_per_second": p["images_per_second_after"],
                         "images_per_second_unpruned": p["images_per_second_before"],
                         "top1_pruned": top1_pruned, "top1_finetuned": top1})
            (work / "results.json").write_text(json.dumps(rows, indent=2) + "\n")

    lines = [f"Pruning study: {a.arch} trained {a.epochs} epochs with sparsity {a.sparsity} on "
             f"{a.samples or 60000} Fashion-MNIST images; channel ratio R removed by |gamma| (global percentile); "
             f"fine-tuned {a.finetune_epochs} epoch(s) at lr 0.01; top-1 on the 10,000 test images. "
             f"Unpruned: {100*unpruned_top1:.2f}%. images/s: CPU, batch 64, 28x28, the pruned network in plain "
             f"form (deploy runtime).", "",
             "| form | channel ratio | params removed | params | MACs | images/s (unpruned) | top-1 pruned | "
             "top-1 fine-tuned |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['form']} | {r['ratio']} | {100*r['params_removed']:.1f}% | {r['params_after']} | "
                     f"{r['flops_after']} | {r['images_per_second']:.0f} ({r['images_per_second_unpruned']:.0f}) | "
                     f"{100*r['top1_pruned']:.2f}% | {100*r['top1_finetuned']:.2f}% |")
    table = "\n".join(lines) + "\n"
    pathlib.Path(a.table).write_text(table)
    print(table)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for form, style, label in (("residual", "s--", "ResNet (in-block channels only)"),
                               ("plain", "o-", "RMNet (plain, every channel)")):
        pts = [r for r in rows if r["form"] == form]
        axes[0].plot([100 * r["params_removed"] for r in pts], [100 * r["top1_finetuned"] for r in pts], style,
                     label=label)
        axes[1].plot([r["images_per_second"] for r in pts], [100 * r["top1_finetuned"] for r in pts], style,
                     label=label)
    axes[0].set_xlabel("parameters removed (%)")
    axes[1].set_xlabel("images/s (CPU, batch 64)")
    for ax in axes:
        ax.set_ylabel("test top-1 after fine-tuning (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Slimming {a.arch} on Fashion-MNIST")
    fig.tight_layout()
    fig.savefig(a.plot, dpi=120)
    print("wrote", a.table, a.plot)


if __name__ == "__main__":
    main()

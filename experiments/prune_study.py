#!/usr/bin/env python3
"""Figure 6 of the paper at small scale: network slimming of a residual network (only channels inside
blocks can go) against slimming of its plain RM form (every channel is free), on the same weights, at
equal parameters removed and equal fine-tuning budgets.

Trains a ResNet with sparsity (L1 on BN scales and shortcut scales) on Fashion-MNIST, converts it to the
plain BN-kept form, and for each fraction x of the RESIDUAL network's parameters to remove:
  residual  `rmnet prune --residual-baseline --target-params 1-x`
  plain     `rmnet prune --target-params (1-x) * P_residual / P_plain`   (the same absolute size)
  plain/old the same with `--importance gamma --no-fold` (the rule before the fix; not fine-tuned)
each evaluated on the 10,000 test images before and after fine-tuning (same epochs, lr, images), with
images/s measured by `rmnet prune` (CPU, batch 64, the pruned network in plain form on the default
runtime). Writes a Markdown table (--table), a PNG (--plot: accuracy against parameters removed and
against images/s, and the histogram of the BN scales by channel origin) and WORK/results.json.

Usage: experiments/prune_study.py RMNET_BINARY [--arch resnet20] [--epochs 8] [--samples 12000]
           [--sparsity 1e-3] [--removed 0.3 0.5 0.7] [--finetune-epochs 2] [--lock /tmp/rmnet-cpu.lock]
           [--work runs/prune] [--table docs/pruning_table.md] [--plot docs/pruning.png]
"""
import argparse
import json
import pathlib
import subprocess

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LOCK = []


def run(cmd):
    print("$", " ".join(map(str, cmd)), flush=True)
    subprocess.run(LOCK + [str(c) for c in cmd], check=True)


def bn_scales(plain_file):
    """|gamma| of every BN channel of a plain BN-kept model file, grouped by provenance role."""
    d = torch.load(plain_file, weights_only=False)
    header, state = json.loads(d["rmnet"]), d["state"]
    prov = header.get("provenance", [])
    out = {}
    for i, layer in enumerate(header["layers"]):
        if layer["type"] != "batchnorm" or i >= len(prov):
            continue
        g = state[f"{i}.weight"].abs().double().numpy()
        c = 0
        for role, module, first, count in prov[i]:
            out.setdefault(role, []).extend(g[c:c + count].tolist())
            c += count
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rmnet")
    ap.add_argument("--arch", default="resnet20")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--samples", type=int, default=12000, help="training images used (0 = all 60,000)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--sparsity", type=float, default=1e-3)
    ap.add_argument("--removed", type=float, nargs="+", default=[0.3, 0.5, 0.7],
                    help="fractions of the residual network's parameters to remove")
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--finetune-lr", type=float, default=0.01)
    ap.add_argument("--bench-iters", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lock", default="", help="run every rmnet command under `flock LOCK` (shared machines)")
    ap.add_argument("--work", default="runs/prune")
    ap.add_argument("--table", default="docs/pruning_table.md")
    ap.add_argument("--plot", default="docs/pruning.png")
    a = ap.parse_args()
    if a.lock:
        LOCK.extend(["flock", a.lock])
    work = pathlib.Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    common = ["--dataset", "fashion-mnist", "--batch-size", a.batch_size, "--workers", 2, "--seed", a.seed,
              "--max-train-samples", a.samples]

    base = work / "base"
    if not (base / "final.rmnet").exists():
        run([a.rmnet, "train", "--arch", a.arch, "--epochs", a.epochs, "--lr", 0.1, "--schedule", "cosine",
             "--warmup-epochs", 0.2, "--sparsity", a.sparsity, "--out", base, *common])
    plain = base / "plain.rmnet"
    run([a.rmnet, "convert", "--model", base / "final.rmnet", "--keep-bn", "--out", plain, "--verify-size", 28])

    def evaluate(model, tag):
        js = work / f"eval_{tag}.json"
        run([a.rmnet, "eval", "--model", model, "--dataset", "fashion-mnist", "--json", js])
        return json.loads(js.read_text())["model"]

    def prune(src, tag, *flags):
        info = work / f"{tag}.json"
        run([a.rmnet, "prune", "--model", src, "--out", work / f"{tag}.rmnet", "--keep-one", "--input-size", 28,
             "--bench-iters", a.bench_iters, "--json", info, *flags])
        return json.loads(info.read_text())

    ev = evaluate(base / "final.rmnet", "unpruned")
    unpruned_top1, p_res = ev["top1"], ev["parameters"]
    p_plain = evaluate(plain, "unpruned_plain")["parameters"]
    bench = work / "bench_unpruned.json"
    run([a.rmnet, "bench", "--model", base / "final.rmnet", "--model", plain, "--batch", 64, "--input-size", 28,
         "--warmup", 5, "--iters", a.bench_iters, "--json", bench])
    speeds = [m["images_per_second"] for m in json.loads(bench.read_text())["models"]]
    scales = bn_scales(plain)

    rows = []
    for x in a.removed:
        for form in ("residual", "plain", "plain_old"):
            tag = f"{form}_{x}"
            if form == "residual":
                p = prune(base / "final.rmnet", tag, "--residual-baseline", "--target-params", f"{1 - x:.6f}")
                after = p["residual_params_after"]
            else:
                flags = ["--target-params", f"{(1 - x) * p_res / p_plain:.6f}"]
                if form == "plain_old":
                    flags += ["--importance", "gamma", "--no-fold"]
                p = prune(plain, tag, *flags)
                after = p["params_after"]
            top1_pruned = evaluate(work / f"{tag}.rmnet", tag + "_pruned")["top1"]
            top1_ft = None
            if form != "plain_old":
                ft = work / f"ft_{tag}"
                run([a.rmnet, "train", "--init", work / f"{tag}.rmnet", "--epochs", a.finetune_epochs, "--lr",
                     a.finetune_lr, "--schedule", "cosine", "--out", ft, *common])
                top1_ft = evaluate(ft / "final.rmnet", tag + "_finetuned")["top1"]
            rows.append({"form": form, "removed_target": x, "params_removed": 1 - after / p_res, "params": after,
                         "macs": p["flops_after"],
                         "removed_by_role": p.get("removed_by_role", {}),
                         "images_per_second": p.get("images_per_second_after"),
                         "top1_pruned": top1_pruned, "top1_finetuned": top1_ft})
            (work / "results.json").write_text(json.dumps({"rows": rows, "unpruned_top1": unpruned_top1,
                                                           "residual_params": p_res, "speeds_unpruned": speeds},
                                                          indent=2) + "\n")

    lines = [f"Pruning study: {a.arch} trained {a.epochs} epochs (batch {a.batch_size}, SGD 0.1 cosine) with sparsity "
             f"{a.sparsity} on {a.samples or 60000} Fashion-MNIST images; unpruned top-1 {100 * unpruned_top1:.2f}% "
             f"({p_res} parameters; images/s: residual {speeds[0]:.0f} eager, plain {speeds[1]:.0f} deploy). Targets "
             f"are parameters removed from the residual network; both forms fine-tuned {a.finetune_epochs} epoch(s) "
             f"at lr {a.finetune_lr} on the same images; top-1 on the 10,000 test images. images/s: CPU, batch 64, "
             f"28x28, the pruned network in plain form (default runtime). 'plain (old rule)': |gamma| ranking, no "
             f"folding, as before the fix (not fine-tuned).", "",
             "| form | params removed | params | MACs | images/s | removed channels (branch/reserved/merged/layer) "
             "| top-1 pruned | top-1 fine-tuned |", "|---|---:|---:|---:|---:|---|---:|---:|"]
    names = {"residual": "residual baseline", "plain": "plain (RM)", "plain_old": "plain (old rule)"}
    for r in rows:
        roles = "/".join(str(r["removed_by_role"].get(k, 0)) for k in ("branch", "reserved", "merged", "layer"))
        ft = f"{100 * r['top1_finetuned']:.2f}%" if r["top1_finetuned"] is not None else "-"
        ips = f"{r['images_per_second']:.0f}" if r["images_per_second"] else "-"
        lines.append(f"| {names[r['form']]} | {100 * r['params_removed']:.1f}% | {r['params']} | {r['macs']} | {ips} | "
                     f"{roles} | {100 * r['top1_pruned']:.2f}% | {ft} |")
    ok = [r for r in rows if r["form"] == "plain" and r["top1_finetuned"] >= unpruned_top1 - 0.005]
    if ok:
        best = max(ok, key=lambda r: r["images_per_second"])
        lines += ["", f"Equal accuracy (within 0.5 pt of the unpruned {100 * unpruned_top1:.2f}%): the plain network "
                  f"with {100 * best['params_removed']:.0f}% of the parameters removed reaches "
                  f"{100 * best['top1_finetuned']:.2f}% at {best['images_per_second']:.0f} images/s against the residual "
                  f"original's {speeds[0]:.0f} (rmnet eager): {best['images_per_second'] / speeds[0]:.2f}x."]
    else:
        lines += ["", "No pruned plain network is within 0.5 pt of the unpruned accuracy after fine-tuning."]
    table = "\n".join(lines) + "\n"
    pathlib.Path(a.table).write_text(table)
    print(table)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for form, style, label in (("residual", "s--", "ResNet (in-block channels only)"),
                               ("plain", "o-", "RMNet (plain, every channel)")):
        pts = [r for r in rows if r["form"] == form]
        axes[0].plot([100 * r["params_removed"] for r in pts], [100 * r["top1_finetuned"] for r in pts], style,
                     label=label)
        axes[1].plot([r["images_per_second"] for r in pts], [100 * r["top1_finetuned"] for r in pts], style,
                     label=label)
    for ax in axes[:2]:
        ax.axhline(100 * unpruned_top1, color="gray", lw=0.8, ls=":", label="unpruned")
        ax.set_ylabel("test top-1 after fine-tuning (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_xlabel("parameters removed from the residual network (%)")
    axes[1].set_xlabel("images/s (CPU, batch 64)")
    bins = np.logspace(-4, 1, 40)
    for role, vals in sorted(scales.items()):
        axes[2].hist(np.clip(vals, 1e-4, 10), bins=bins, alpha=0.6, label=f"{role} ({len(vals)})")
    axes[2].set_xscale("log")
    axes[2].set_xlabel("|gamma| of the plain form's BN channels")
    axes[2].set_ylabel("channels")
    axes[2].legend()
    fig.suptitle(f"Slimming {a.arch} on Fashion-MNIST (sparsity {a.sparsity}, {a.epochs} epochs)")
    fig.tight_layout()
    fig.savefig(a.plot, dpi=110)
    print("wrote", a.table, a.plot)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Pruned plain networks after a short fine-tuning: rmnet's side of the Torch-Pruning comparison.

Converts a trained residual model (BN kept), prunes its plain form to fractions of the *residual*
network's MACs with `rmnet prune --target-macs` (selection flags as given), evaluates top-1 before
fine-tuning, then fine-tunes each for E epochs with `rmnet train --init` (SGD 0.9, lr 0.01 cosine,
wd 5e-4, batch 128, pad-2 crop + flip: the recipe of experiments/prune_peers.py), optionally distilled
from the unpruned network (`--teacher`), and evaluates again. Times the result on rmnet's runtime
(`rmnet bench`, batch 32). Prints a markdown table, writes JSON.

    experiments/prune_finetune.py runs/demo/final.rmnet --prune-flags="--reconstruct" --distill \\
        --json docs/data/prune_finetune.json
"""
import argparse
import json
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402


def run(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def macs_of(rmnet, model, size):
    out = run([rmnet, "info", "--model", model, "--input-size", size, "--no-layers"])
    return int(re.search(r"MACs per image at \d+x\d+: (\d+)", out).group(1))


def executed_macs(rmnet, model, size):
    """MACs per image that rmnet's onednn runtime executes (Dirac shortcuts are not convolutions):
    the sum over `rmnet bench --profile` steps at batch 1."""
    with tempfile.TemporaryDirectory() as d:
        js = pathlib.Path(d) / "p.json"
        run([rmnet, "bench", "--model", model, "--batch", 1, "--input-size", size, "--iters", 1, "--warmup", 0,
             "--runtime", "onednn", "--profile", "--json", js])
        return sum(s.get("macs", 0) for s in json.loads(js.read_text())["models"][0]["steps"])


def bench(rmnet, model, size, batch):
    with tempfile.TemporaryDirectory() as d:
        js = pathlib.Path(d) / "b.json"
        run([rmnet, "bench", "--model", model, "--batch", batch, "--input-size", size, "--iters", 50,
             "--warmup", 20, "--json", js])
        r = json.loads(js.read_text())["models"][0]
        return r["images_per_second"], r["runtime"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--rmnet", default=str(common.ROOT / "build" / "rmnet"))
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.75, 0.50, 0.35])
    ap.add_argument("--prune-flags", default="--reconstruct",
                    help="extra rmnet prune flags (quoted)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-flags", default="", help="extra rmnet train flags (quoted), e.g. --keep-dirac")
    ap.add_argument("--distill", action="store_true", help="also fine-tune with the unpruned network as teacher")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--batch", type=int, default=32, help="bench batch")
    ap.add_argument("--calib-images", type=int, default=512)
    ap.add_argument("--residual-baseline", action="store_true",
                    help="prune the residual model's in-block channels only (rmnet prune --residual-baseline: the "
                         "stream, and so every Dirac shortcut, stays), at the fractions of the residual network's MACs")
    ap.add_argument("--json")
    a = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="prune_finetune_"))
    plain = work / "plain_bn.rmnet"
    run([a.rmnet, "convert", "--model", a.model, "--keep-bn", "--out", plain, "--verify-size", a.size])
    res_macs, plain_macs = macs_of(a.rmnet, a.model, a.size), macs_of(a.rmnet, plain, a.size)
    flags = shlex.split(a.prune_flags)
    if "--reconstruct" in flags:
        flags += ["--calib-dataset", "fashion-mnist", "--calib-images", str(a.calib_images)]
    rows = []
    for f in a.fractions:
        pruned = work / f"p{f}.rmnet"
        if a.residual_baseline:
            run([a.rmnet, "prune", "--model", a.model, "--residual-baseline", "--out", pruned, "--target-macs", f,
                 "--keep-one", "--input-size", a.size, "--bench-iters", 0] + flags)
        else:  # with --executed-macs the fraction is of the executed MACs: the residual network's
            frac = f if "--executed-macs" in flags else f * res_macs / plain_macs
            run([a.rmnet, "prune", "--model", plain, "--out", pruned, "--target-macs",
                 f"{frac:.6f}", "--keep-one", "--input-size", a.size, "--bench-iters", 0] + flags)
        row = {"fraction": f, "macs": macs_of(a.rmnet, pruned, a.size),
               "executed_macs": executed_macs(a.rmnet, pruned, a.size),
               "before": common.rmnet_eval(a.rmnet, pruned)["top1"]}
        variants = [("after", [])] + ([("after_distilled", ["--teacher", plain])] if a.distill else [])
        for key, extra in variants:
            out = work / f"ft{f}_{key}"
            run([a.rmnet, "train", "--init", pruned, "--dataset", "fashion-mnist", "--epochs", a.epochs, "--lr", 0.01,
                 "--schedule", "cosine", "--weight-decay", 5e-4, "--batch-size", 128, "--seed", 0, "--workers", 2,
                 "--out", out] + extra + shlex.split(a.train_flags))
            row[key] = common.rmnet_eval(a.rmnet, out / "final.rmnet")["top1"]
            common.log(f"{f:.2f} {key}: {100 * row[key]:.2f}%")
        row["images_per_second"], row["runtime"] = bench(a.rmnet, work / f"ft{f}_after" / "final.rmnet", a.size, a.batch)
        rows.append(row)
        common.log(json.dumps(row))
    cols = ["before", "after"] + (["after_distilled"] if a.distill else [])
    print(f"\nprune flags: {a.prune_flags}; train flags: {a.train_flags}; residual {res_macs:,} MACs, plain {plain_macs:,}; {a.epochs} epoch(s)\n")
    print("| MACs (of the residual's) | MACs | executed MACs | " + " | ".join(cols) + " | images/s (b" +
          str(a.batch) + ") |")
    print("|---|---|---|" + "---|" * len(cols) + "---|")
    for r in rows:
        print(f"| {r['fraction']:.2f} | {r['macs']:,} | {r['executed_macs']:,} | " +
              " | ".join(f"{100 * r[c]:.2f}%" for c in cols) + f" | {r['images_per_second']:,.0f} |")
    if a.json:
        pathlib.Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(a.json).write_text(json.dumps({"model": a.model, "prune_flags": a.prune_flags,
                                                    "residual_baseline": a.residual_baseline,
                                                    "train_flags": a.train_flags,
                                                    "residual_macs": res_macs, "plain_macs": plain_macs,
                                                    "epochs": a.epochs, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

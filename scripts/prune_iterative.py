#!/usr/bin/env python3
"""Iterative pruning: prune -> fine-tune, several rounds, to a parameter or MACs target.

Round i of N prunes the current network to F^(i/N) of the ORIGINAL network's parameters (or MACs),
F being the final target, then fine-tunes it; the last round reaches F. Each round is one
`rmnet prune --target-params|--target-macs` (targets relative to the network it is given, so the
script converts) and one `rmnet train --init`. Extra prune flags (--round-to 8, --max-layer-ratio 0.8,
--importance gamma, ...) pass through after `--`.

Usage: scripts/prune_iterative.py RMNET_BINARY --model plain_bn.rmnet --target-params 0.3 [--rounds 3]
           [--finetune-epochs 1] [--lr 0.01] [--dataset fashion-mnist] [--max-train-samples 0]
           [--work runs/iterative] [-- PRUNE_FLAGS...]
Writes WORK/round<i>/ (pruned.rmnet, prune.json, fine-tuned final.rmnet, eval.json) and WORK/summary.json;
the last round's fine-tuned network is WORK/final.rmnet.
"""
import argparse
import json
import pathlib
import shutil
import subprocess
import sys


def run(cmd):
    print("$", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rmnet")
    ap.add_argument("--model", required=True, help="plain network with BatchNorms kept")
    goal = ap.add_mutually_exclusive_group(required=True)
    goal.add_argument("--target-params", type=float, help="final parameters as a fraction of the original's")
    goal.add_argument("--target-macs", type=float, help="final MACs as a fraction of the original's")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data", default="", help="data folder (the dataset's default when empty)")
    ap.add_argument("--max-train-samples", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="runs/iterative")
    a = ap.parse_args(argv)
    final = a.target_params if a.target_params is not None else a.target_macs
    if not (0 < final <= 1):
        ap.error(f"the target must be in (0, 1] (got {final})")
    if a.rounds < 1:
        ap.error(f"--rounds must be at least 1 (got {a.rounds})")
    key = ("params_before", "params_after") if a.target_params is not None else ("flops_before", "flops_after")
    flag = "--target-params" if a.target_params is not None else "--target-macs"
    work = pathlib.Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    data = ["--data", a.data] if a.data else []

    current, original, fraction, rounds = pathlib.Path(a.model), None, 1.0, []
    for i in range(1, a.rounds + 1):
        rd = work / f"round{i}"
        rd.mkdir(exist_ok=True)
        goal_i = final ** (i / a.rounds)
        relative = min(1.0, goal_i / fraction)
        info = rd / "prune.json"
        run([a.rmnet, "prune", "--model", current, "--out", rd / "pruned.rmnet", flag, f"{relative:.6f}",
             "--keep-one", "--bench-iters", 0, "--json", info, *extra])
        p = json.loads(info.read_text())
        if original is None:
            original = p[key[0]]
        fraction = p[key[1]] / original
        run([a.rmnet, "train", "--init", rd / "pruned.rmnet", "--dataset", a.dataset, *data, "--epochs",
             a.finetune_epochs, "--lr", a.lr, "--schedule", "cosine", "--batch-size", a.batch_size, "--seed", a.seed,
             "--max-train-samples", a.max_train_samples, "--out", rd / "ft"])
        run([a.rmnet, "eval", "--model", rd / "ft" / "final.rmnet", "--dataset", a.dataset, *data,
             "--json", rd / "eval.json"])
        top1 = json.loads((rd / "eval.json").read_text())["model"]["top1"]
        rounds.append({"round": i, "goal": goal_i, "fraction": fraction, "params": p["params_after"],
                       "macs": p["flops_after"], "top1_finetuned": top1})
        print(f"round {i}: {100 * fraction:.1f}% of the original {key[0].split('_')[0]} (goal {100 * goal_i:.1f}%), "
              f"top-1 after fine-tuning {100 * top1:.2f}%", flush=True)
        current = rd / "ft" / "final.rmnet"
    shutil.copyfile(current, work / "final.rmnet")
    (work / "summary.json").write_text(json.dumps({"model": str(a.model), "target": final, "by": flag[9:],
                                                   "rounds": rounds}, indent=2) + "\n")
    print("wrote", work / "final.rmnet", work / "summary.json")


if __name__ == "__main__":
    main()

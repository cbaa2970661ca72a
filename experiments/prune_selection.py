#!/usr/bin/env python3
"""Why plain-form pruning lost to residual-aware pruning, and what fixes it: a probe of rmnet's
channel selection on a trained network, before fine-tuning.

Converts a trained residual model (BN kept), then prunes its plain form with `rmnet prune
--target-macs` to the same *absolute* MACs as fractions of the residual network's (the plain form
costs more, so the plain fraction is smaller), under selection variants:

  old          per-channel ranking, importance alone (rmnet's default selection)   --grouping none
  per-cost     per-channel, importance per MAC saved                             --per-cost
  stream       stream groups, importance alone                                   --grouping stream
  stream+cost  stream groups, importance per MAC saved                           --grouping stream --per-cost
  +rec         the same with least-squares reconstruction on calibration images  --reconstruct
(run 2026-12-02 with the flags of that day, where per-cost and stream were the defaults: the variants
are the same selections)

and evaluates each on the 10,000 Fashion-MNIST test images (`rmnet eval`). Prints a markdown table and
writes JSON.

    experiments/prune_selection.py runs/demo/final.rmnet --rmnet build/rmnet --json docs/data/prune_selection.json
"""
import argparse
import json
import pathlib
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

VARIANTS = {
    "old": ["--grouping", "none"],
    "per-cost": ["--grouping", "none", "--per-cost"],
    "stream": ["--grouping", "stream"],
    "stream+cost": ["--grouping", "stream", "--per-cost"],
    "old+rec": ["--grouping", "none", "--reconstruct"],
    "per-cost+rec": ["--grouping", "none", "--per-cost", "--reconstruct"],
    "stream+rec": ["--grouping", "stream", "--reconstruct"],
    "stream+cost+rec": ["--grouping", "stream", "--per-cost", "--reconstruct"],
}


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def macs_of(rmnet, model, size):
    out = run([rmnet, "info", "--model", model, "--input-size", str(size), "--no-layers"])
    m = re.search(r"MACs per image at \d+x\d+: (\d+)", out)
    if not m:
        raise RuntimeError(f"no MACs in: {out}")
    return int(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="trained residual rmnet model file")
    ap.add_argument("--rmnet", default=str(common.ROOT / "build" / "rmnet"))
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.75, 0.50, 0.35],
                    help="target MACs as fractions of the residual network's")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--importance", default="contribution", choices=["contribution", "gamma"])
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--calib-images", type=int, default=512)
    ap.add_argument("--json")
    a = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="prune_selection_"))
    plain = str(work / "plain_bn.rmnet")
    run([a.rmnet, "convert", "--model", a.model, "--keep-bn", "--out", plain, "--verify-size", str(a.size)])
    res_macs, plain_macs = macs_of(a.rmnet, a.model, a.size), macs_of(a.rmnet, plain, a.size)
    base = common.rmnet_eval(a.rmnet, a.model)["top1"]
    common.log(f"residual {res_macs} MACs, plain {plain_macs} MACs ({plain_macs / res_macs:.2f}x); top-1 {base:.4f}")
    rows = []
    for f in a.fractions:
        target = f * res_macs / plain_macs
        for v in a.variants:
            out = str(work / f"p_{f}_{v}.rmnet")
            js = str(work / f"p_{f}_{v}.json")
            cmd = [a.rmnet, "prune", "--model", plain, "--out", out, "--target-macs", f"{target:.6f}", "--keep-one",
                   "--importance", a.importance, "--input-size", str(a.size), "--bench-iters", "0", "--json", js]
            cmd += VARIANTS[v]
            if "--reconstruct" in VARIANTS[v]:
                cmd += ["--calib-dataset", "fashion-mnist", "--calib-images", str(a.calib_images)]
            run(cmd)
            rep = json.loads(pathlib.Path(js).read_text())
            top1 = common.rmnet_eval(a.rmnet, out)["top1"]
            row = {"fraction": f, "variant": v, "macs": rep["flops_after"], "top1": top1,
                   "removed_by_role": rep["removed_by_role"], "params": rep["params_after"]}
            rows.append(row)
            common.log(f"{f:.2f} {v:<16} MACs {rep['flops_after']} ({rep['flops_after'] / res_macs:.3f} of the "
                       f"residual)  top-1 {100 * top1:.2f}%  removed {rep['removed_by_role']}")
    print()
    print(f"Residual {res_macs:,} MACs, plain {plain_macs:,} ({plain_macs / res_macs:.2f}x), top-1 {100 * base:.2f}%; "
          f"importance {a.importance}; top-1 before fine-tuning:\n")
    print("| MACs (of the residual's) | " + " | ".join(a.variants) + " |")
    print("|---|" + "---|" * len(a.variants))
    for f in a.fractions:
        cells = [f"{100 * r['top1']:.2f}%" for v in a.variants for r in rows if r["fraction"] == f and r["variant"] == v]
        print(f"| {f:.2f} | " + " | ".join(cells) + " |")
    if a.json:
        pathlib.Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(a.json).write_text(json.dumps({"model": a.model, "residual_macs": res_macs,
                                                    "plain_macs": plain_macs, "top1": base, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

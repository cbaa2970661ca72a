"""Pruned + INT8 plain networks against PyTorch's own INT8 of the residual original, at equal
accuracy (docs/QUANTIZATION.md). The unpruned RM form has more MACs than the residual original, so
at equal precision it trails the original's INT8; slimming the plain form (`rmnet prune`, docs/
pruning.md) is how it wins them back. For each MACs target: prune the study's plain network, fine-tune
it briefly (`rmnet train --init`), quantize it (defaults), evaluate top-1 on the 10,000 test images
and time it (`rmnet bench`, batch 32, 28x28, 2 threads); in the same run, PyTorch's x86 INT8 of the
residual original (quant_peers.py's flow, calibrated on the same images) is evaluated and timed.

  quant_pruned.py --rmnet build/rmnet --study runs/quant --net resnet8 [--targets 0.6 0.45] [--epochs 2]

Needs quant_study.py's outputs for the network (final.rmnet, plain.rmnet, quantize_mse_act.json for
the calibration indices). Writes <study>/<net>/pruned.json."""
import argparse
import json
import pathlib
import sys

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import THREADS, fm_arrays as idx, load_original, predict_fn as predict, pytorch_int8, sh, speed  # noqa: E402


def macs(rmnet, model):
    out = sh([rmnet, "info", "--model", model, "--input-size", 28], capture=True)
    line = [l for l in out.splitlines() if "MACs per image" in l][-1]
    return int(line.split("MACs per image at 28x28:")[1].split()[0])


def bench(rmnet, model, work, iters):
    j = work / "bench_tmp.json"
    sh([rmnet, "--threads", THREADS, "bench", "--model", model, "--batch", 32, "--input-size", 28, "--iters", iters,
        "--warmup", max(5, iters // 10), "--json", j])
    return json.loads(j.read_text())["models"][0]["images_per_second"]


def top1(rmnet, model, work):
    j = work / "eval_tmp.json"
    sh([rmnet, "eval", "--model", model, "--dataset", "fashion-mnist", "--json", j])
    return json.loads(j.read_text())["model"]["top1"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rmnet", default="build/rmnet")
    ap.add_argument("--study", default="runs/quant")
    ap.add_argument("--net", default="resnet8")
    ap.add_argument("--targets", nargs="+", type=float, default=[0.6, 0.45])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--bench-iters", type=int, default=1000,
                    help="timed forwards of rmnet bench (batch 32): enough for a few seconds on small networks")
    ap.add_argument("--round-to", type=int, default=16,
                    help="channel counts kept multiples of this (INT8 kernels want multiples of 16)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="timing rounds, interleaved over all models and the peer; the best of each counts")
    ap.add_argument("--reuse", action="store_true", help="keep pruned, fine-tuned and quantized files that exist")
    a = ap.parse_args()
    torch.set_num_threads(THREADS)
    work = pathlib.Path(a.study) / a.net
    res = {"net": a.net, "fine_tune_epochs": a.epochs, "round_to": a.round_to, "rows": []}
    res["original_macs"], res["plain_macs"] = macs(a.rmnet, work / "final.rmnet"), macs(a.rmnet, work / "plain.rmnet")

    # the peer: PyTorch's INT8 of the residual original, same calibration images, same run
    test_x, test_y = idx("t10k")
    train_x, _ = idx("train")
    report = json.loads((work / "quantize_mse_act.json").read_text())
    calib = train_x[np.asarray(report["calibration_indices"], dtype=np.int64)]
    model = load_original(work / "final.rmnet")
    qm, flow = pytorch_int8(model, calib)
    p = predict(qm, test_x)
    res["pytorch_int8_residual"] = {"flow": flow, "top1": float((p == test_y).mean()),
                                    "images_per_second": speed(qm, test_x), "macs": res["original_macs"]}
    print("peer", res["pytorch_int8_residual"], flush=True)
    fp32_residual = speed(model, test_x)  # and PyTorch's float32 of the residual, for scale

    # the unpruned RM form in INT8, for reference
    q0 = work / "q_percentile_act.rmnet"
    res["rows"].append({"file": str(q0), "target_macs": 1.0, "macs": res["plain_macs"], "float32_top1": top1(a.rmnet, work / "plain.rmnet", work),
                        "int8_top1": top1(a.rmnet, q0, work)})
    plain_bn = work / "plain_bn.rmnet"  # slimming ranks channels by BN scales: the form with BN kept
    if not plain_bn.exists():
        sh([a.rmnet, "convert", "--model", work / "final.rmnet", "--keep-bn", "--out", plain_bn, "--verify-size", 28])
    for t in a.targets:
        tag = f"pruned{int(round(t * 100))}_r{a.round_to}"
        pruned, ft, q = work / f"{tag}.rmnet", work / f"{tag}_ft", work / f"q_{tag}.rmnet"
        if not (a.reuse and pruned.exists()):
            sh([a.rmnet, "prune", "--model", plain_bn, "--target-macs", t, "--input-size", 28,
                "--round-to", a.round_to, "--out", pruned])
        pre = top1(a.rmnet, pruned, work)
        if not (a.reuse and (ft / "final.rmnet").exists()):
            sh([a.rmnet, "train", "--init", pruned, "--dataset", "fashion-mnist", "--epochs", a.epochs, "--lr", 0.01,
                "--schedule", "cosine", "--batch-size", 128, "--workers", 2, "--seed", 0, "--out", ft])
        if not (a.reuse and q.exists()):
            sh([a.rmnet, "quantize", "--model", ft / "final.rmnet", "--calib-dataset", "fashion-mnist", "--out", q])
        row = {"target_macs": t, "macs": macs(a.rmnet, ft / "final.rmnet"), "pruned_top1_before_fine_tune": pre,
               "float32_top1": top1(a.rmnet, ft / "final.rmnet", work), "int8_top1": top1(a.rmnet, q, work)}
        row["file"] = str(q)
        res["rows"].append(row)
        print(row, flush=True)
    # timing: interleaved rounds over the peer and every INT8 model (this VM's speed drifts by up to
    # 2x from minute to minute); the best round of each counts
    for rnd in range(a.repeat):
        peer_ips = speed(qm, test_x)
        res["pytorch_int8_residual"]["images_per_second"] = max(
            peer_ips, res["pytorch_int8_residual"]["images_per_second"] if rnd else 0.0)
        for r in res["rows"]:
            r["int8_images_per_second"] = max(bench(a.rmnet, r["file"], work, a.bench_iters),
                                              r.get("int8_images_per_second", 0.0))
        print(f"round {rnd + 1}: peer {peer_ips:.0f}, rmnet", [round(r["int8_images_per_second"]) for r in res["rows"]],
              flush=True)
    res["pytorch_float32_residual_images_per_second"] = fp32_residual
    (work / "pruned.json").write_text(json.dumps(res, indent=2) + "\n")
    peer = res["pytorch_int8_residual"]
    print(f"\n| {a.net} | MACs/img | float32 top-1 | INT8 top-1 | INT8 images/s | vs PyTorch INT8 residual |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| residual original, PyTorch {flow} INT8 | {peer['macs'] / 1e6:.2f} M | - | {peer['top1'] * 100:.2f}% | "
          f"{peer['images_per_second']:,.0f} | 1.00x |")
    for r in res["rows"]:
        print(f"| RM plain, MACs target {r['target_macs']} | {r['macs'] / 1e6:.2f} M | {r['float32_top1'] * 100:.2f}% | "
              f"{r['int8_top1'] * 100:.2f}% | {r['int8_images_per_second']:,.0f} | "
              f"{r['int8_images_per_second'] / peer['images_per_second']:.2f}x |")


if __name__ == "__main__":
    main()

"""INT8 study (docs/QUANTIZATION.md): trains (or reuses) small networks on Fashion-MNIST, converts
them to plain networks, quantizes them with and without cross-layer equalization and with each
observer (`rmnet quantize`), evaluates top-1 on the 10,000 test images (`rmnet eval`, int8
runtime), benchmarks float32 and INT8 (`rmnet bench`, batch 32), collects per-layer weight-range
statistics before/after equalization, runs the peers (ONNX Runtime quantize_static on the float
ONNX; PyTorch's FX x86 INT8 flow on the residual original) and writes study.json + a plot.

  quant_study.py --rmnet build/rmnet --out runs/quant [--lock /tmp/rmnet-cpu.lock] [--nets resnet8,...]

Every CPU-heavy step runs under `flock LOCK` when --lock is given (one command per acquisition)."""
import argparse
import json
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import fm_arrays as idx, sh  # noqa: E402

NETS = {
    # name: (arch, train flags)
    "resnet8": ("resnet8", ["--epochs", "4"]),
    "mobilenet_v2_w0.5": ("mobilenet_v2_cifar", ["--width-mult", "0.5", "--epochs", "1", "--max-train-samples", "30000"]),
    "resnet50": ("resnet50", ["--epochs", "1", "--max-train-samples", "30000"]),
}
# (observer, equalization): "act" = by activation ranges (the default), "wt" = by weights (DFQ), "noeq" = off
VARIANTS = [(obs, eq) for obs in ("mse", "percentile", "minmax") for eq in ("act", "wt", "noeq")]
EQ_FLAGS = {"act": [], "wt": ["--equalize-by", "weights"], "noeq": ["--no-equalize"]}


def weight_stats(path):
    """Per conv layer of a quantized model: the spread (max / median) of per-channel weight ranges
    (127 * weight_scale) and the activation scales at the quantization points."""
    import torch
    state = torch.load(str(path), weights_only=False)["state"]
    header = json.loads(torch.load(str(path), weights_only=False)["rmnet"])
    layers = []
    for i, l in enumerate(header["layers"]):
        if l.get("type", l.get("kind")) in ("conv", "Conv") and f"{i}.weight_scale" in state:
            r = 127 * state[f"{i}.weight_scale"].double()
            layers.append({"layer": i, "channels": r.numel(), "range_max": r.max().item(),
                           "range_median": r.median().item(), "range_min": r.min().item(),
                           "spread": (r.max() / r.median().clamp_min(1e-12)).item()})
    acts = {k: v.item() for k, v in state.items() if k.endswith("out_scale")}
    return layers, acts


def ort_peer(onnx_path, work, calib_x, test_x, test_y, lock):
    """ONNX Runtime quantize_static (QDQ, per-channel s8 weights, u8 activations, MinMax) of the float ONNX."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": calib_x[i:i + 64]} for i in range(0, len(calib_x), 64)])

        def get_next(self):
            return next(self.batches, None)

    out = work / "ort_int8.onnx"
    t0 = time.time()
    quantize_static(str(onnx_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    res = {"quantize_seconds": time.time() - t0}
    for tag, path in [("float32", onnx_path), ("int8", out)]:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        pred = np.concatenate([s.run(None, {"input": test_x[i:i + 500]})[0].argmax(1) for i in range(0, len(test_x), 500)])
        xb = test_x[:32]
        for _ in range(5):
            s.run(None, {"input": xb})
        t0 = time.time()
        n = 0
        while time.time() - t0 < 3:
            s.run(None, {"input": xb})
            n += 1
        res[tag] = {"top1": float((pred == test_y).mean()), "images_per_second": 32 * n / (time.time() - t0)}
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rmnet", required=True)
    ap.add_argument("--out", default="runs/quant")
    ap.add_argument("--lock", default=None)
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--calib-images", type=int, default=512)
    ap.add_argument("--bench-iters", type=int, default=30)
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the results of steps whose output files exist (a variant's eval and report JSON)")
    a = ap.parse_args()
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    study_path = out / "study.json"
    study = json.loads(study_path.read_text()) if study_path.exists() else {}
    test_x, test_y = idx("t10k")
    train_x, _ = idx("train")
    calib_x = train_x[:a.calib_images]
    for name in a.nets.split(","):
        arch, flags = NETS[name]
        work = out / name
        work.mkdir(exist_ok=True)
        res = study.setdefault(name, {"arch": arch, "train_flags": flags})
        if not (work / "final.rmnet").exists():
            sh([a.rmnet, "train", "--arch", arch, "--dataset", "fashion-mnist", "--batch-size", "128", "--lr", "0.1",
                "--schedule", "cosine", "--warmup-epochs", "0.2", "--workers", "2", "--seed", "0", "--out", work, *flags],
               a.lock)
        if not (work / "plain.rmnet").exists():
            sh([a.rmnet, "convert", "--model", work / "final.rmnet", "--out", work / "plain.rmnet", "--verify-size", "28",
                "--onnx", work / "plain.onnx"], a.lock)
        if not (a.reuse and (work / "eval_float.json").exists()):
            sh([a.rmnet, "eval", "--model", work / "final.rmnet", "--compare", work / "plain.rmnet", "--json",
                work / "eval_float.json"], a.lock)
        ev = json.loads((work / "eval_float.json").read_text())
        res["residual_top1"], res["float32_top1"] = ev["model"]["top1"], ev["compare"]["top1"]
        res["variants"] = {}
        for obs, eq in VARIANTS:
            tag = f"{obs}_{eq}"
            q, report, ev = work / f"q_{tag}.rmnet", work / f"quantize_{tag}.json", work / f"eval_{tag}.json"
            # quantization is deterministic (seeded calibration choice), so --reuse may keep an
            # evaluation while re-running the quick quantize step for its report
            if not (a.reuse and report.exists() and q.exists()):
                sh([a.rmnet, "quantize", "--model", work / "plain.rmnet", "--calib-dataset", "fashion-mnist",
                    "--calib-images", a.calib_images, "--observer", obs, "--out", q, "--json", report] + EQ_FLAGS[eq],
                   a.lock)
            if not (a.reuse and ev.exists()):
                sh([a.rmnet, "eval", "--model", q, "--compare", work / "plain.rmnet", "--json", ev], a.lock)
            e = json.loads(ev.read_text())
            layers, acts = weight_stats(q)
            res["variants"][tag] = {"top1": e["model"]["top1"], "agreement_with_float": e["agreement"],
                                    "runtime": e["model"]["runtime"], "weight_ranges": layers,
                                    "activation_scales": acts,
                                    "activation_spread": json.loads(report.read_text())["activation_spread"]}
        # speed, batch 32: float32 plain (deploy runtime), INT8, residual (eager)
        sh([a.rmnet, "bench", "--model", work / "final.rmnet", "--model", work / "plain.rmnet", "--model",
            work / "q_mse_act.rmnet", "--batch", "32", "--input-size", "28", "--iters", a.bench_iters, "--json",
            work / "bench.json"], a.lock)
        b = json.loads((work / "bench.json").read_text())
        res["bench"] = b
        if not a.skip_peers:
            try:
                res["peer_ort"] = ort_peer(work / "plain.onnx", work, calib_x, test_x, test_y, None)
            except Exception as e:  # reported, not hidden
                res["peer_ort"] = {"error": repr(e)}
        study_path.write_text(json.dumps(study, indent=2) + "\n")
    plot(study, out)


def plot(study, out):
    """Per equalization pair: the spread (largest / median) of per-channel activation ranges that one
    per-tensor u8 scale must cover, without equalization and after each criterion (minmax variants)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    nets = [n for n in study if "variants" in study[n]]
    fig, axes = plt.subplots(1, len(nets), figsize=(5 * len(nets), 3.6), squeeze=False)
    for ax, n in zip(axes[0], nets):
        v = study[n]["variants"]
        for tag, key, style, label in [("minmax_noeq", "before", "o-", "no equalization"),
                                       ("minmax_wt", "after", "^-", "equalized by weights (DFQ)"),
                                       ("minmax_act", "after", "s-", "equalized by activations")]:
            if tag in v and "activation_spread" in v[tag]:
                sp = v[tag]["activation_spread"]
                ax.semilogy([p["producer"] for p in sp], [p[key] for p in sp], style, ms=3, label=label)
        ax.set_title(f"{n}: activation range spread")
        ax.set_xlabel("producer conv layer index")
        ax.set_ylabel("max / median channel range")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "ranges.png", dpi=110)
    print("wrote", out / "ranges.png")


if __name__ == "__main__":
    main()

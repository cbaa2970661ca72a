#!/usr/bin/env python3
"""Side-by-side inference speed: PyTorch eager, PyTorch TorchScript (frozen + optimize_for_inference),
PyTorch torch.compile (Inductor, freezing on: PyTorch's fastest CPU path), ONNX Runtime and
`rmnet bench` (eager, torchscript and onednn runtimes), on the same networks, weights, inputs, batch
and threads.

For each network (torchvision resnet18 / resnet50 / mobilenet_v2, random weights) it measures the
original residual model and its RM-converted plain network (rmnet convert --torchvision, BN fused,
pointwise fusion auto), at each input size. The converted network reaches Python through rmnet's
own exports (.pth + chain JSON -> torch.nn.Sequential; .onnx -> ONNX Runtime). Protocol everywhere:
`warmup` untimed forwards, then `iters` timed ones; images/s = batch * iters / time.

    scripts/compare_speed.py --rmnet build/rmnet --threads 2 --out docs/speed.md

Ratios printed: rmnet's onednn runtime against each peer on the same plain network, and the fraction of
the machine's measured conv peak (`rmnet bench --profile`: best fused, prepacked 3x3 conv) it reaches.
"""
import argparse
import warnings
import json
import pathlib
import sys
import time

import torch
import torchvision

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from rmnet_sequential import load_sequential  # noqa: E402
from speed_common import (add_shape_flags, shapes_of, compiled, load_average_warning, openvino_runner, ort_session, run, scriptable,  # noqa: E402
                          time_fn, torchscript_optimized)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rmnet", default="build/rmnet", help="rmnet binary")
    ap.add_argument("--work", default="/tmp/rmnet_compare_speed", help="folder for weights and exports")
    ap.add_argument("--nets", nargs="+", default=["resnet18", "resnet50", "mobilenet_v2"])
    ap.add_argument("--threads", type=int, default=2)
    add_shape_flags(ap)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--warmup-large", type=int, default=3, help="untimed forwards at sizes > 64")
    ap.add_argument("--iters", type=int, default=20, help="timed forwards at sizes <= 64")
    ap.add_argument("--iters-large", type=int, default=5, help="timed forwards at sizes > 64")
    ap.add_argument("--repeat", type=int, default=1,
                    help="measure every runtime this many times, interleaved, and keep the best (noisy machines)")
    ap.add_argument("--forms", nargs="+", default=["original", "RM"], choices=["original", "RM"])
    ap.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--openvino", action="store_true",
                    help="also OpenVINO f32 and bf16 on the same ONNX files, and rmnet onednn in bf16 (run with the "
                         "peers venv's python, scripts/peers_env.sh; on an idle machine)")
    ap.add_argument("--out", help="also write the Markdown table here")
    ap.add_argument("--json", help="also write all numbers as JSON here")
    ap.add_argument("--plot", help="also draw the peers and rmnet onednn relative to torch.compile here (PNG)")
    ap.add_argument("--replot", metavar="JSON", help="draw --plot from an earlier run's --json; measure nothing")
    a = ap.parse_args()
    if a.replot:
        if not a.plot:
            ap.error("--replot needs --plot")
        plot(json.loads(pathlib.Path(a.replot).read_text()), a.plot, a.replot)
        return

    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit's deprecation notices
    torch.set_num_threads(a.threads)
    work = pathlib.Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    rows, t_start = [], time.time()
    load, load_warning = load_average_warning()
    if load_warning:
        print(load_warning, flush=True)
    # the machine's conv peak as rmnet measures it (fused, prepacked 3x3 conv, same threads)
    peak_json = work / "peak.json"
    run([a.rmnet, "--threads", a.threads, "init", "--arch", "resnet8", "--num-classes", 10, "--out", work / "peak_r8.rmnet"])
    run([a.rmnet, "--threads", a.threads, "convert", "--model", work / "peak_r8.rmnet", "--out", work / "peak_r8p.rmnet"])
    run([a.rmnet, "--threads", a.threads, "bench", "--model", work / "peak_r8p.rmnet", "--batch", 2, "--warmup", 0,
         "--iters", 1, "--profile", "--json", peak_json])
    conv_peak = json.loads(peak_json.read_text())["machine"].get("conv_peak_gmacs", 0.0)
    print(f"measured conv peak: {conv_peak:.1f} GMAC/s", flush=True)
    for net in a.nets:
        torch.manual_seed(0)
        orig = getattr(torchvision.models, net)().eval()
        weights = work / f"{net}.pth"
        torch.save(orig.state_dict(), weights)
        base = work / f"{net}_rm"
        run([a.rmnet, "convert", "--torchvision", net, "--weights", weights, "--out", f"{base}.rmnet",
             "--onnx", f"{base}.onnx", "--pth", f"{base}.pth"])
        plain = load_sequential(f"{base}.pth")
        with torch.no_grad():
            x = torch.randn(2, 3, 64, 64)
            ref = orig(x)
            err = float((plain(x) - ref).abs().max() / ref.abs().max())
        print(f"{net}: rmnet's converted network vs torchvision, max rel error {err:.2e}", flush=True)
        onnx_orig = work / f"{net}.onnx"
        if not a.no_ort and not onnx_orig.exists():
            try:
                torch.onnx.export(orig, torch.randn(1, 3, 224, 224), str(onnx_orig), input_names=["input"],
                                  output_names=["logits"], dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}},
                                  opset_version=17, dynamo=False)
            except Exception as e:  # noqa: BLE001
                print(f"    torch.onnx.export of the original failed: {str(e).splitlines()[0][:100]}")
        for size, batch in shapes_of(a):
            large = size > 64
            iters = a.iters_large if large else a.iters
            warmup = a.warmup_large if large else a.warmup
            x = torch.randn(batch, 3, size, size)
            for form, model, onnx in (("original", orig, onnx_orig), ("RM", plain, pathlib.Path(f"{base}.onnx"))):
                if form not in a.forms:
                    continue
                label = f"{net} {form} {size}x{size} b{batch}"
                print(label, flush=True)
                r = {"net": net, "form": form, "size": size, "batch": batch, "iters": iters, "warmup": warmup,
                     "repeat": a.repeat}
                ts, ts_kind = torchscript_optimized(scriptable(model) if form == "RM" else model, x)
                r["torchscript_kind"] = ts_kind
                comp = None
                if not a.no_compile:
                    comp, r["compile_seconds"] = compiled(model, x)
                sess = ort_session(onnx, a.threads) if not a.no_ort and onnx.exists() else None
                ov = {}
                if a.openvino and onnx.exists():
                    for prec in ("f32", "bf16"):
                        try:
                            ov[prec] = openvino_runner(onnx, tuple(x.shape), prec, a.threads)
                        except Exception as e:  # noqa: BLE001
                            print(f"    OpenVINO {prec} failed: {str(e).splitlines()[0][:100]}", flush=True)
                    if "f32" in ov:  # OpenVINO runs the same function (a wrong import would time something else)
                        with torch.no_grad():
                            ref = model(x)
                        got = torch.from_numpy(ov["f32"](x.numpy()))
                        r["openvino_f32_relerr"] = float((got - ref).abs().max() / ref.abs().max())
                common = ["--batch", batch, "--input-size", size, "--warmup", warmup, "--iters", iters]
                out_json = work / "bench.json"
                src = ["--arch", net] if form == "original" else ["--model", f"{base}.rmnet"]

                def best(key, value):
                    r[key] = max(r.get(key, 0.0), value)

                for _ in range(a.repeat):
                    with torch.inference_mode():
                        best("torch_eager", time_fn(model, x, warmup, iters))
                        best("torchscript", time_fn(ts, x, warmup, iters))
                    if comp is not None:
                        with torch.no_grad():
                            best("torch_compile", time_fn(comp, x, warmup, iters))
                    if sess is not None:
                        best("onnxruntime", time_fn(sess, x.numpy(), warmup, iters))
                    for prec, fn in ov.items():
                        best(f"openvino_{prec}", time_fn(fn, x.numpy(), warmup, iters))
                    run([a.rmnet, "--threads", a.threads, "bench", *src, *common, "--runtime", "eager", "--json",
                         out_json])
                    m = json.loads(out_json.read_text())["models"][0]
                    best("rmnet_eager", m["images_per_second"])
                    r["macs"] = m["flops"]
                    if form == "RM":
                        for rt in ("torchscript", "onednn"):
                            run([a.rmnet, "--threads", a.threads, "bench", *src, *common, "--runtime", rt, "--json",
                                 out_json])
                            best(f"rmnet_{rt}", json.loads(out_json.read_text())["models"][0]["images_per_second"])
                        if a.openvino:
                            run([a.rmnet, "--threads", a.threads, "bench", *src, *common, "--runtime", "onednn",
                                 "--dtype", "bf16", "--json", out_json])
                            best("rmnet_onednn_bf16", json.loads(out_json.read_text())["models"][0]["images_per_second"])
                        r["onednn_peak_fraction"] = r["macs"] * r["rmnet_onednn"] / 1e9 / conv_peak if conv_peak else 0.0
                print("   " + ", ".join(f"{k} {v:.1f}" for k, v in r.items() if isinstance(v, float)), flush=True)
                rows.append(r)

    def f(v):
        return f"{v:.0f}" if isinstance(v, float) else "-"

    def pct(v):
        return f"{100 * v:.0f}%" if v else "-"

    def ratio(r, k, num="rmnet_onednn"):
        if num not in r or k not in r:
            return "-"
        v = r[num] / r[k]
        return f"**{v:.2f}x**" if v < 1.0 else f"{v:.2f}x"

    lines = [
        f"threads {a.threads}; best of {a.repeat}; torch {torch.__version__}, torchvision {torchvision.__version__}"
        + (f", onnxruntime {__import__('onnxruntime').__version__}" if not a.no_ort else "")
        + (f", openvino {__import__('openvino').__version__}" if a.openvino else "")
        + f"; 1-minute load at start {load:.2f}"
        + f"; measured conv peak {conv_peak:.1f} GMAC/s; total {time.time() - t_start:.0f} s; images/s "
        "(bold: a ratio below 1, a miss)",
        "",
        "| network | form | input | batch | MMACs/img | torch eager | TorchScript opt | torch.compile (freezing) "
        "| ONNX Runtime | rmnet eager | rmnet torchscript | rmnet onednn | onednn/compile | onednn/ORT | onednn/TS "
        "| of conv peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['net']} | {r['form']} | {r['size']}x{r['size']} | {r['batch']} | {r['macs'] / 1e6:.1f} "
            f"| {f(r.get('torch_eager'))} | {f(r.get('torchscript'))} | {f(r.get('torch_compile'))} "
            f"| {f(r.get('onnxruntime'))} | {f(r.get('rmnet_eager'))} | {f(r.get('rmnet_torchscript'))} "
            f"| {f(r.get('rmnet_onednn'))} | {ratio(r, 'torch_compile')} | {ratio(r, 'onnxruntime')} "
            f"| {ratio(r, 'torchscript')} "
            f"| {pct(r.get('onednn_peak_fraction'))} |")
    if a.openvino:
        lines += [
            "",
            "Same networks, OpenVINO (same ONNX files; f32 and bf16 forced with INFERENCE_PRECISION_HINT; "
            f"{a.threads} threads, 1 stream, latency mode) against rmnet's onednn runtime in the same precision "
            "(bold: rmnet below OpenVINO):",
            "",
            "| network | form | input | batch | OpenVINO f32 | rmnet onednn f32 | rmnet/OV f32 | OpenVINO bf16 "
            "| rmnet onednn bf16 | rmnet/OV bf16 | OV f32 max rel err |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            err = r.get("openvino_f32_relerr")
            lines.append(
                f"| {r['net']} | {r['form']} | {r['size']}x{r['size']} | {r['batch']} | {f(r.get('openvino_f32'))} "
                f"| {f(r.get('rmnet_onednn'))} | {ratio(r, 'openvino_f32')} | {f(r.get('openvino_bf16'))} "
                f"| {f(r.get('rmnet_onednn_bf16'))} | {ratio(r, 'openvino_bf16', 'rmnet_onednn_bf16')} "
                f"| {'-' if err is None else f'{err:.1e}'} |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if a.out:
        pathlib.Path(a.out).write_text(text)
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
    if a.plot:
        plot(rows, a.plot, f"threads {a.threads}, best of {a.repeat}")


def plot(rows, path, subtitle):
    """Grouped bars: each runtime's images/s over torch.compile's (freezing), per network and input."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [("torchscript", "TorchScript opt"), ("onnxruntime", "ONNX Runtime"),
              ("torch_compile", "torch.compile (freezing)"), ("rmnet_onednn", "rmnet onednn")]
    rows = [r for r in rows if r.get("torch_compile")]
    labels = [f"{r['net']} {r['form']}\n{r['size']}x{r['size']} b{r['batch']}" for r in rows]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rows)), 4.2))
    for k, (key, name) in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(rows))]
        ys = [r.get(key, 0.0) / r["torch_compile"] for r in rows]
        bars = ax.bar(xs, ys, width, label=name)
        for b, y in zip(bars, ys):
            if y:
                ax.text(b.get_x() + b.get_width() / 2, y + 0.02, f"{y:.2f}", ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("images/s relative to torch.compile")
    ax.set_title(f"CPU inference of the RM-converted networks ({subtitle})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

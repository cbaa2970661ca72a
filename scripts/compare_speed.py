#!/usr/bin/env python3
"""One inference-speed harness, every precision, the peers users would pick (issue 23): on the same
networks, weights, inputs, batch and threads,

  f32   PyTorch eager, TorchScript (frozen + optimize_for_inference), torch.compile (Inductor with
        freezing: PyTorch's fastest CPU path), ONNX Runtime, OpenVINO (--openvino) and `rmnet bench`
        (eager, torchscript and onednn runtimes);
  bf16  rmnet onednn in bf16 and OpenVINO bf16 (--openvino), beside the f32 table;
  int8  rmnet's RM INT8 (`rmnet quantize` on synthetic calibration images, `rmnet bench --runtime
        int8`) against its float32 forms, PyTorch's INT8 of the original (PT2E + X86InductorQuantizer
        when this torch has it, else the FX x86 flow), ONNX Runtime quantize_static (QDQ, per-channel)
        of the original's ONNX and (--openvino) NNCF INT8 in OpenVINO of the original's ONNX and of
        rmnet's plain ONNX: the same network rmnet runs. Agreement: top-1 agreement of each INT8
        variant with its float32 model on held-out synthetic images (random weights: a weak proxy).

For each network (torchvision resnet18 / resnet50 / mobilenet_v2, random weights, torch.manual_seed(0))
it measures the original residual model and its RM-converted plain network (rmnet convert
--torchvision, BN fused, pointwise fusion auto), at each (size, batch) (--shapes 224:1 224:8 32:1 32:32,
or --sizes with --batch / --batch-large). The converted network reaches Python through rmnet's own
exports (.pth + chain JSON -> torch.nn.Sequential; .onnx -> ONNX Runtime and OpenVINO). OpenVINO's
precision is said aloud (INFERENCE_PRECISION_HINT: on a CPU with avx512_bf16 it runs bf16 by
default), with the same threads, one stream, latency mode. OpenVINO pins its threads: run on an
otherwise idle machine (the 1-minute load at the start is recorded; a warning when it is above 0.5).
Calibration (int8): smooth-noise RGB PNGs written as a folder data set at rmnet's resize size, so that
rmnet's eval transform reduces to a center crop this script replicates; the same images calibrate
rmnet, PyTorch, ONNX Runtime and NNCF. Protocol everywhere: `warmup` untimed forwards, then `iters`
timed ones; images/s = batch * iters / time; --repeat K measures every runtime K times, interleaved,
and keeps the best. A peer that fails is reported as "-" with a one-line reason.

    scripts/compare_speed.py --rmnet build/rmnet --threads 2 --out docs/speed.md
    $(scripts/peers_env.sh | tail -1) scripts/compare_speed.py --rmnet build/rmnet --openvino \
        --precisions f32 bf16 int8 --shapes 224:1 224:8 32:1 32:32 --repeat 2 --out FILE.md --json FILE.json

(The INT8 part was scripts/quant_speed.py before; its flags carry over.) Ratios printed: rmnet's onednn
runtime against each peer on the same plain network, the fraction of the machine's measured conv peak
(`rmnet bench --profile`) it reaches, and rmnet against OpenVINO in the same precision.
"""
import argparse
import datetime
import warnings
import json
import pathlib
import sys
import time

import torch
import torchvision

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from rmnet_sequential import load_sequential  # noqa: E402
from speed_common import (add_shape_flags, agreement, batches, compile_frozen, compiled, count_macs,  # noqa: E402
                          load_average_warning, load_split, make_folder_dataset, nncf_int8_runner, openvino_runner,
                          ort_quantize, ort_session, predict, pt2e_api, run, scriptable, shapes_of, sh, time_fn,
                          torch_fx, torch_pt2e, torchscript_optimized, why)


# ------------------------------------------------------------------------------------------- INT8
def int8_row(a, rmnet, work, net, orig, plain, plain_onnx, onnx_float, onnx_err, size, batch, pt_flow):
    """The INT8 measurements of one network at one (size, batch): rmnet's RM INT8 against its float32
    forms, PyTorch's and ONNX Runtime's INT8 of the original and (--openvino) NNCF's INT8 of the
    original and of rmnet's plain ONNX; agreement with float32 on held-out images."""
    large = size > 64
    iters = a.iters_large if large else a.iters
    warmup = a.warmup_large if large else a.warmup
    label = f"{net} {size}x{size} b{batch}"
    print(f"{label}", flush=True)
    r = {"net": net, "size": size, "batch": batch, "iters": iters, "warmup": warmup, "repeat": a.repeat,
         "threads": a.threads, "pytorch_int8_flow": pt_flow, "errors": {}}
    err = r["errors"]
    data = work / f"data_{size}"
    make_folder_dataset(data, size, a.calib_images, a.eval_images)
    calib = load_split(data, "train", size)
    held = load_split(data, "val", size)
    x = torch.randn(batch, 3, size, size)
    torch._dynamo.reset()  # a fresh compile cache per (network, size): static shapes, no recompiles
    r["macs_original"] = count_macs(orig, x)
    ref = predict(orig, held)  # float32 original logits on the held-out images

    # --- rmnet: quantize the plain network with this size's calibration images; agreement
    qfile = work / f"{net}_q{size}.rmnet"
    try:
        sh([rmnet, "--threads", a.threads, "quantize", "--model", plain, "--calib-dataset", "folder",
            "--data", data, "--image-size", size, "--calib-images", a.calib_images, "--out", qfile])
    except RuntimeError as e:
        err["rmnet_int8"] = str(e)
        qfile = None
    if qfile is not None:
        ej = work / "eval.json"
        try:
            sh([rmnet, "--threads", a.threads, "eval", "--model", qfile, "--compare", plain, "--dataset",
                "folder", "--data", data, "--image-size", size, "--workers", 0, "--json", ej])
            r["agree_rmnet_int8"] = json.loads(ej.read_text())["agreement"]
        except (RuntimeError, KeyError, ValueError) as e:
            err["agree_rmnet_int8"] = str(e)

    # --- original float32: eager; torch.compile (freezing)
    timers = {"orig_eager": lambda t: orig(t)}
    if not a.no_compile:
        try:
            fn, r["compile_seconds_orig"] = compile_frozen(orig, x)
            timers["orig_compile"] = fn
        except Exception as e:  # noqa: BLE001
            err["orig_compile"] = why(e)

    # --- PyTorch INT8 of the original
    if pt_flow == "pt2e":
        try:
            qm, where = torch_pt2e(orig, calib, x[:1])
            r["pytorch_int8_flow"] = f"pt2e ({where}, X86InductorQuantizer)"
            if a.no_compile:
                timers["pt_int8_eager"] = qm
            else:
                fn, r["compile_seconds_pt_int8"] = compile_frozen(qm, x)
                timers["pt_int8_compile"] = fn
            r["agree_pt_int8"], r["logit_relerr_pt_int8"] = agreement(ref, predict(fn if not a.no_compile
                                                                                 else qm, held))
        except Exception as e:  # noqa: BLE001
            err["pt_int8"] = f"pt2e: {why(e)}"
    else:
        try:
            qm = torch_fx(orig, calib, x[:1])
            timers["pt_int8_eager"] = qm
            r["agree_pt_int8"], r["logit_relerr_pt_int8"] = agreement(ref, predict(qm, held))
            if not a.no_compile:
                try:
                    counters = torch._dynamo.utils.counters
                    counters.clear()
                    fn, r["compile_seconds_pt_int8"] = compile_frozen(qm, x)
                    # quantized ops lack fake-tensor kernels: dynamo may graph-break / fall back to eager
                    r["pt_int8_compile_dynamo_counters"] = {k: sum(v.values()) for k, v in counters.items()}
                    with torch.no_grad():  # the compiled graph must agree with the eager one
                        d = float((fn(x) - qm(x)).abs().max())
                    r["pt_int8_compile_vs_eager_maxdiff"] = d
                    timers["pt_int8_compile"] = fn
                except Exception as e:  # noqa: BLE001
                    err["pt_int8_compile"] = f"torch.compile of the FX INT8 model: {why(e)}"
        except Exception as e:  # noqa: BLE001
            err["pt_int8_eager"] = f"FX: {why(e)}"

    # --- ONNX Runtime INT8 (and float, for reference) of the original
    if not a.no_ort:
        if onnx_float.exists():
            try:
                timers["ort_fp32"] = ort_session(onnx_float, a.threads)
            except Exception as e:  # noqa: BLE001
                err["ort_fp32"] = why(e)
            onnx_q = work / f"{net}_ort_int8_{size}.onnx"
            try:
                ort_quantize(onnx_float, onnx_q, calib)
                sess = ort_session(onnx_q, a.threads)
                timers["ort_int8"] = sess
                ql = torch.cat([torch.from_numpy(sess(b.numpy())[0]) for b in batches(held)])
                r["agree_ort_int8"], r["logit_relerr_ort_int8"] = agreement(ref, ql)
            except Exception as e:  # noqa: BLE001
                err["ort_int8"] = f"ORT quantize_static: {why(e)}"
        else:
            err["ort_int8"] = onnx_err or "no float ONNX"

    # --- OpenVINO: NNCF INT8 of the original and of the same plain network rmnet runs
    if a.openvino:
        for key, onnx_in in (("ov_nncf_int8_orig", onnx_float), ("ov_nncf_int8_rm", plain_onnx)):
            if not onnx_in.exists():
                err[key] = f"no ONNX file {onnx_in.name}"
                continue
            try:
                fn = nncf_int8_runner(onnx_in, tuple(x.shape), calib, a.threads)
                timers[key] = fn
                n = x.shape[0]  # the runner's static batch: agreement on the whole batches of held-out images
                if held.shape[0] >= n:
                    m = held.shape[0] // n * n
                    ql = torch.cat([torch.from_numpy(fn(held[i:i + n].numpy())) for i in range(0, m, n)])
                    r[f"agree_{key}"], r[f"logit_relerr_{key}"] = agreement(ref[:m], ql)
            except Exception as e:  # noqa: BLE001
                err[key] = f"NNCF/OpenVINO: {why(e)}"

    # --- timing, interleaved best-of
    common = ["--batch", batch, "--input-size", size, "--warmup", warmup, "--iters", iters]
    bj = work / "bench.json"

    def best(key, value):
        r[key] = max(r.get(key, 0.0), value)

    def bench(key, model, runtime, env=None):
        try:
            sh([rmnet, "--threads", a.threads, "bench", "--model", model, *common, "--runtime", runtime,
                "--json", bj], env=env)
            m = json.loads(bj.read_text())["models"][0]
            best(key, m["images_per_second"])
            return m
        except (RuntimeError, KeyError, ValueError, IndexError) as e:
            err[key] = str(e)
            return None

    for rep in range(a.repeat):
        for key, fn in list(timers.items()):
            try:
                with torch.no_grad():
                    xin = x.numpy() if key.startswith(("ort", "ov_")) else x
                    best(key, time_fn(fn, xin, warmup, iters))
            except Exception as e:  # noqa: BLE001
                err[key] = why(e)
                del timers[key]
        for key, rt in (("rm_fp32_torchscript", "torchscript"), ("rm_fp32_onednn", "onednn")):
            m = bench(key, plain, rt)
            if m is not None and "flops" in m:
                r["macs_plain"] = m["flops"]
        if qfile is not None:
            bench("rm_int8", qfile, "int8")
            if a.onednn_ops:  # the INT8 executor over LibTorch's operators
                bench("rm_int8_ops", qfile, "int8", env={"RMNET_ONEDNN_DIRECT": "0"})
            if a.shortcuts_off:  # every Dirac channel a convolution
                bench("rm_int8_noshort", qfile, "int8", env={"RMNET_DIRAC_SHORTCUTS": "0"})

    # --- ratios
    pt_keys = [k for k in ("pt_int8_eager", "pt_int8_compile") if k in r]
    if pt_keys:
        k = max(pt_keys, key=lambda k: r[k])
        r["pt_int8_best"], r["pt_int8_best_kind"] = r[k], k
    for name, den in (("int8_over_orig_compile", "orig_compile"), ("int8_over_rm_onednn", "rm_fp32_onednn"),
                      ("int8_over_pt_int8", "pt_int8_best"), ("int8_over_ort_int8", "ort_int8")):
        if "rm_int8" in r and den in r and r[den] > 0:
            r[name] = r["rm_int8"] / r[den]
    if "macs_plain" in r:
        r["macs_ratio_plain_over_original"] = r["macs_plain"] / r["macs_original"]
    nums = ", ".join(f"{k} {v:.3g}" for k, v in r.items() if isinstance(v, float))
    print(f"   {nums}", flush=True)
    for k, v in err.items():
        print(f"   - {k}: {v}", flush=True)
    return r


def int8_report(a, rows, pt_flow, t_start, load):
    """The INT8 table (Markdown), with notes and failures."""
    def f(r, k):
        v = r.get(k)
        return f"{v:.0f}" if isinstance(v, float) else "-"

    def ratio(r, k, goal=None):
        v = r.get(k)
        if not isinstance(v, float):
            return "-"
        s = f"{v:.2f}x"
        return f"**{s}**" if goal is not None and v < goal else s

    def agree(r, k):
        v = r.get(k)
        return f"{100 * v:.0f}%" if isinstance(v, float) else "-"

    def quot(r, num, den):
        return f"{r[num] / r[den]:.2f}x" if r.get(num) and r.get(den) else "-"

    import onnxruntime

    lines = [
        f"{datetime.date.today().isoformat()}; threads {a.threads}; best of {a.repeat}; torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, onnxruntime {onnxruntime.__version__}; random weights, synthetic "
        f"calibration images ({a.calib_images} smooth-noise PNGs; a speed measurement, the calibration only needs to "
        f"be plausible); PyTorch INT8: {pt_flow}; 1-minute load at start {load:.2f}; total {time.time() - t_start:.0f} s",
        "",
        "images/s. Goals: RM INT8 >= 2x the original's torch.compile (freezing) float32; RM INT8 >= 3x rmnet onednn "
        "float32 at batch 32 (bold: a goal missed). RM INT8 / PyTorch INT8 is expected < 1 (the plain form has more "
        "MACs). Agreement: top-1 agreement of each INT8 variant with its float32 model on "
        f"{a.eval_images} held-out synthetic images (random weights: a weak proxy).",
        "",
        "| network | input | batch | MACs plain/orig | orig eager | orig compile (freezing) | PyTorch INT8 eager "
        "| PyTorch INT8 compile | ORT fp32 | ORT INT8 | RM fp32 torchscript | RM fp32 onednn | RM INT8 "
        "| INT8/orig compile | INT8/RM onednn | INT8/PyTorch INT8 | INT8/ORT INT8 | agree RM INT8 | agree PyTorch INT8 "
        "| agree ORT INT8 |",
        "|" + "---|" * 20,
    ]
    for r in rows:
        lines.append(
            f"| {r['net']} | {r['size']}x{r['size']} | {r['batch']} | {ratio(r, 'macs_ratio_plain_over_original')} "
            f"| {f(r, 'orig_eager')} | {f(r, 'orig_compile')} | {f(r, 'pt_int8_eager')} | {f(r, 'pt_int8_compile')} "
            f"| {f(r, 'ort_fp32')} | {f(r, 'ort_int8')} | {f(r, 'rm_fp32_torchscript')} | {f(r, 'rm_fp32_onednn')} "
            f"| {f(r, 'rm_int8')} | {ratio(r, 'int8_over_orig_compile', 2.0)} "
            f"| {ratio(r, 'int8_over_rm_onednn', 3.0 if r['batch'] == 32 else None)} "
            f"| {ratio(r, 'int8_over_pt_int8')} | {ratio(r, 'int8_over_ort_int8')} | {agree(r, 'agree_rmnet_int8')} "
            f"| {agree(r, 'agree_pt_int8')} | {agree(r, 'agree_ort_int8')} |")
    if a.openvino:
        lines += ["", "OpenVINO's INT8 (NNCF, default preset; float layers f32): of the residual original and of rmnet's "
                  "plain ONNX, the same network rmnet runs (bold: rmnet below OpenVINO on the same plain network):", "",
                  "| network | input | batch | NNCF INT8 original | NNCF INT8 plain | RM INT8 (rmnet) | rmnet/OV same plain "
                  "| agree NNCF plain | agree RM INT8 |" + (" RM INT8 over LibTorch ops | direct/ops |" if a.onednn_ops else "")
                  + (" RM INT8, every channel | shortcuts/every | rmnet/NNCF original |" if a.shortcuts_off else ""),
                  "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if a.onednn_ops else "")
                  + ("---|---|---|" if a.shortcuts_off else "")]
        for r in rows:
            same = (r["rm_int8"] / r["ov_nncf_int8_rm"]) if r.get("rm_int8") and r.get("ov_nncf_int8_rm") else None
            ops = (r["rm_int8"] / r["rm_int8_ops"]) if r.get("rm_int8") and r.get("rm_int8_ops") else None
            lines.append(f"| {r['net']} | {r['size']}x{r['size']} | {r['batch']} | {f(r, 'ov_nncf_int8_orig')} "
                         f"| {f(r, 'ov_nncf_int8_rm')} | {f(r, 'rm_int8')} "
                         f"| {'-' if same is None else (f'**{same:.2f}x**' if same < 1 else f'{same:.2f}x')} "
                         f"| {agree(r, 'agree_ov_nncf_int8_rm')} | {agree(r, 'agree_rmnet_int8')} |"
                         + (f" {f(r, 'rm_int8_ops')} | {'-' if ops is None else f'{ops:.2f}x'} |" if a.onednn_ops else "")
                         + (f" {f(r, 'rm_int8_noshort')} | {quot(r, 'rm_int8', 'rm_int8_noshort')} "
                            f"| {quot(r, 'rm_int8', 'ov_nncf_int8_orig')} |" if a.shortcuts_off else ""))
    failures = [f"- {r['net']} {r['size']}x{r['size']}: {k}: {v}" for r in rows for k, v in r["errors"].items()]
    notes = [f"- {r['net']} {r['size']}x{r['size']}: torch.compile of the PyTorch INT8 model: dynamo counters "
             f"{r['pt_int8_compile_dynamo_counters']} (graph breaks / fallbacks: the compiled model may run eager "
             "quantized kernels)" for r in rows if r.get("pt_int8_compile_dynamo_counters")]
    if notes:
        lines += ["", "Notes:", ""] + notes
    if failures:
        lines += ["", "Failures (shown as -):", ""] + failures
    text = "\n".join(lines) + "\n"
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rmnet", default="build/rmnet", help="rmnet binary")
    ap.add_argument("--work", default="/tmp/rmnet_compare_speed", help="folder for weights, exports, images")
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
    ap.add_argument("--precisions", nargs="+", default=["f32"], choices=["f32", "bf16", "int8"],
                    help="f32: the float table; bf16: rmnet onednn in bf16 (and OpenVINO bf16 with --openvino); "
                         "int8: the INT8 table (rmnet INT8, PyTorch and ONNX Runtime INT8, NNCF with --openvino)")
    ap.add_argument("--calib-images", type=int, default=64, help="INT8: synthetic calibration images (train split)")
    ap.add_argument("--eval-images", type=int, default=32, help="INT8: held-out synthetic images for agreement")
    ap.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--shortcuts-off", action="store_true",
                    help="also time rmnet's onednn runtime and INT8 executor with every Dirac channel computed (RMNET_DIRAC_SHORTCUTS=0), "
                         "and compare with OpenVINO on the original form (with --forms original RM)")
    ap.add_argument("--onednn-ops", action="store_true",
                    help="also time rmnet's onednn runtime over LibTorch's operators (RMNET_ONEDNN_DIRECT=0), "
                         "beside its direct oneDNN path")
    ap.add_argument("--openvino", action="store_true",
                    help="also OpenVINO f32 and bf16 on the same ONNX files, and rmnet onednn in bf16 (run with the "
                         "peers venv's python, scripts/peers_env.sh; on an idle machine)")
    ap.add_argument("--out", help="also write the Markdown table here")
    ap.add_argument("--json", help="also write all numbers as JSON here")
    ap.add_argument("--plot", help="also draw the peers and rmnet onednn relative to torch.compile here (PNG); with "
                    "--openvino, rmnet over OpenVINO per precision beside it (NAME_vs_openvino.png)")
    ap.add_argument("--replot", metavar="JSON", help="draw --plot from an earlier run's --json; measure nothing")
    a = ap.parse_args()
    if a.replot:
        if not a.plot:
            ap.error("--replot needs --plot")
        replot_rows = json.loads(pathlib.Path(a.replot).read_text())
        plot([r for r in replot_rows if r.get("table") != "int8"], a.plot, a.replot)
        plot_vs_openvino(replot_rows, vs_openvino_path(a.plot), a.replot)
        if any(r.get("rmnet_onednn_noshort") for r in replot_rows):
            plot_shortcuts([r for r in replot_rows if r.get("table") != "int8"], shortcuts_path(a.plot), a.replot)
        return

    warnings.filterwarnings("ignore")  # deprecation notices of torch.jit / torch.ao / torch.onnx
    float_run = bool({"f32", "bf16"} & set(a.precisions))
    int8_rows, pt_flow = [], None
    if "int8" in a.precisions:
        try:
            pt2e_api()
            pt_flow = "pt2e"
        except ImportError as e:
            pt_flow = "fx"
            print(f"PT2E unavailable ({why(e)}); PyTorch INT8 via the FX flow (x86 qconfig mapping)", flush=True)
    torch.set_num_threads(a.threads)
    work = pathlib.Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    rows, t_start = [], time.time()
    load, load_warning = load_average_warning()
    if load_warning:
        print(load_warning, flush=True)
    # the machine's float32 conv peak as rmnet measures it (fused, prepacked 3x3 conv, same threads),
    # for the float table's "of conv peak": at the start and again at the end, the larger kept (one
    # measurement takes about a second and a busy moment lowers it)

    def measure_peak():
        peak_json = work / "peak.json"
        if not (work / "peak_r8p.rmnet").exists():
            run([a.rmnet, "--threads", a.threads, "init", "--arch", "resnet8", "--num-classes", 10, "--out",
                 work / "peak_r8.rmnet"])
            run([a.rmnet, "--threads", a.threads, "convert", "--model", work / "peak_r8.rmnet", "--out",
                 work / "peak_r8p.rmnet"])
        run([a.rmnet, "--threads", a.threads, "bench", "--model", work / "peak_r8p.rmnet", "--batch", 2, "--warmup", 0,
             "--iters", 1, "--profile", "--json", peak_json])
        return json.loads(peak_json.read_text())["machine"].get("conv_peak_gmacs", 0.0)

    conv_peak = measure_peak() if float_run else 0.0
    if float_run:
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
        onnx_err = None
        if (not a.no_ort or a.openvino) and not onnx_orig.exists():
            try:
                torch.onnx.export(orig, torch.randn(1, 3, 224, 224), str(onnx_orig), input_names=["input"],
                                  output_names=["logits"], dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}},
                                  opset_version=17, dynamo=False)
            except Exception as e:  # noqa: BLE001
                onnx_err = f"torch.onnx.export: {why(e)}"
                print(f"    torch.onnx.export of the original failed: {onnx_err}")
        for size, batch in shapes_of(a):
            if "int8" in a.precisions:
                int8_rows.append(int8_row(a, str(pathlib.Path(a.rmnet).resolve()), work, net, orig,
                                          pathlib.Path(f"{base}.rmnet"), pathlib.Path(f"{base}.onnx"), onnx_orig,
                                          onnx_err, size, batch, pt_flow))
            if not float_run:
                continue
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
                    for prec in [p for p in ("f32", "bf16") if p in a.precisions]:
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
                        if "bf16" in a.precisions:
                            run([a.rmnet, "--threads", a.threads, "bench", *src, *common, "--runtime", "onednn",
                                 "--dtype", "bf16", "--json", out_json])
                            best("rmnet_onednn_bf16", json.loads(out_json.read_text())["models"][0]["images_per_second"])
                        if a.onednn_ops:  # the onednn runtime over LibTorch's operators (no direct oneDNN)
                            for prec in [p for p in ("f32", "bf16") if p in a.precisions]:
                                run([a.rmnet, "--threads", a.threads, "bench", *src, *common, "--runtime", "onednn",
                                     "--dtype", "fp32" if prec == "f32" else "bf16", "--json", out_json],
                                    env={"RMNET_ONEDNN_DIRECT": "0"})
                                best("rmnet_onednn_ops" + ("_bf16" if prec == "bf16" else ""),
                                     json.loads(out_json.read_text())["models"][0]["images_per_second"])
                        if a.shortcuts_off:  # every Dirac channel a convolution (RMNET_DIRAC_SHORTCUTS=0)
                            run([a.rmnet, "--threads", a.threads, "bench", *src, *common, "--runtime", "onednn",
                                 "--json", out_json], env={"RMNET_DIRAC_SHORTCUTS": "0"})
                            best("rmnet_onednn_noshort", json.loads(out_json.read_text())["models"][0]["images_per_second"])
                        r["onednn_peak_fraction"] = r["macs"] * r["rmnet_onednn"] / 1e9 / conv_peak if conv_peak else 0.0
                print("   " + ", ".join(f"{k} {v:.1f}" for k, v in r.items() if isinstance(v, float)), flush=True)
                rows.append(r)

    if float_run:
        conv_peak = max(conv_peak, measure_peak())
        print(f"measured conv peak (larger of start and end): {conv_peak:.1f} GMAC/s", flush=True)
        for r in rows:
            if r.get("macs") and r.get("rmnet_onednn"):
                r["onednn_peak_fraction"] = r["macs"] * r["rmnet_onednn"] / 1e9 / conv_peak if conv_peak else 0.0

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
            "| rmnet onednn bf16 | rmnet/OV bf16 | OV f32 max rel err |"
            + (" rmnet over LibTorch ops f32 / bf16 | direct/ops f32 / bf16 |" if a.onednn_ops else ""),
            "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if a.onednn_ops else ""),
        ]
        for r in rows:
            err = r.get("openvino_f32_relerr")
            lines.append(
                f"| {r['net']} | {r['form']} | {r['size']}x{r['size']} | {r['batch']} | {f(r.get('openvino_f32'))} "
                f"| {f(r.get('rmnet_onednn'))} | {ratio(r, 'openvino_f32')} | {f(r.get('openvino_bf16'))} "
                f"| {f(r.get('rmnet_onednn_bf16'))} | {ratio(r, 'openvino_bf16', 'rmnet_onednn_bf16')} "
                f"| {'-' if err is None else f'{err:.1e}'} |"
                + (f" {f(r.get('rmnet_onednn_ops'))} / {f(r.get('rmnet_onednn_ops_bf16'))} "
                   f"| {ratio(r, 'rmnet_onednn_ops')} / {ratio(r, 'rmnet_onednn_ops_bf16', 'rmnet_onednn_bf16')} |"
                   if a.onednn_ops else ""))
        if a.shortcuts_off:
            orig = {(r["net"], r["size"], r["batch"]): r for r in rows if r["form"] == "original"}
            lines += [
                "",
                "Dirac shortcuts: rmnet's onednn runtime (f32) on the RM network with and without them "
                "(RMNET_DIRAC_SHORTCUTS=0), against OpenVINO f32 on the same RM network and on the residual "
                "original (the 'do not convert' choice):",
                "",
                "| network | input | batch | rmnet, shortcuts | rmnet, every channel | shortcuts/every | OV f32, RM "
                "| rmnet/OV same RM | OV f32, original | rmnet/OV original |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for r in rows:
                if r["form"] != "RM" or "rmnet_onednn_noshort" not in r:
                    continue
                o = orig.get((r["net"], r["size"], r["batch"]), {})
                ov_orig = o.get("openvino_f32")
                lines.append(
                    f"| {r['net']} | {r['size']}x{r['size']} | {r['batch']} | {f(r.get('rmnet_onednn'))} "
                    f"| {f(r.get('rmnet_onednn_noshort'))} | {ratio(r, 'rmnet_onednn_noshort')} "
                    f"| {f(r.get('openvino_f32'))} | {ratio(r, 'openvino_f32')} | {f(ov_orig)} "
                    f"| {ratio(dict(r, ov_orig=ov_orig), 'ov_orig') if ov_orig else '-'} |")
    if not float_run:
        lines = []
    if int8_rows:
        lines += ([""] if lines else []) + [int8_report(a, int8_rows, pt_flow, t_start, load)]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if a.out:
        pathlib.Path(a.out).write_text(text)
    if a.json:  # the float rows, then the INT8 rows marked "table": "int8"
        pathlib.Path(a.json).write_text(json.dumps(rows + [dict(r, table="int8") for r in int8_rows], indent=2) + "\n")
    if a.plot and rows:
        plot(rows, a.plot, f"threads {a.threads}, best of {a.repeat}")
        if a.openvino:
            plot_vs_openvino(rows + [dict(r, table="int8") for r in int8_rows], vs_openvino_path(a.plot),
                             f"threads {a.threads}, best of {a.repeat}")
        if a.shortcuts_off:
            plot_shortcuts(rows, shortcuts_path(a.plot), f"threads {a.threads}, best of {a.repeat}")


def grouped_bars(path, labels, series, ylabel, title, group_width=1.6, fontsize=8):
    """A PNG of grouped bars: one group per label, one bar per (name, values) series, its value above it
    (a None value draws no bar), and a line at 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, group_width * len(labels)), 4.2))
    for k, (name, values) in enumerate(series):
        pts = [(i + (k - (len(series) - 1) / 2) * width, y) for i, y in enumerate(values) if y]
        bars = ax.bar([x for x, _ in pts], [y for _, y in pts], width, label=name)
        for bar, (_, y) in zip(bars, pts):
            ax.text(bar.get_x() + bar.get_width() / 2, y + 0.02, f"{y:.2f}", ha="center", va="bottom",
                    fontsize=fontsize - 1)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=fontsize)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def plot(rows, path, subtitle):
    """Grouped bars: each runtime's images/s over torch.compile's (freezing), per network and input."""
    series = [("torchscript", "TorchScript opt"), ("onnxruntime", "ONNX Runtime"),
              ("torch_compile", "torch.compile (freezing)"), ("rmnet_onednn", "rmnet onednn")]
    rows = [r for r in rows if r.get("torch_compile")]
    grouped_bars(path, [f"{r['net']} {r['form']}\n{r['size']}x{r['size']} b{r['batch']}" for r in rows],
                 [(name, [r.get(key, 0.0) / r["torch_compile"] for r in rows]) for key, name in series],
                 "images/s relative to torch.compile",
                 f"CPU inference of the RM-converted networks ({subtitle})")


def plot_vs_openvino(rows, path, subtitle):
    """Grouped bars: rmnet's images/s over OpenVINO's on the same plain network, per precision (f32
    and bf16: onednn vs OpenVINO; int8: rmnet's INT8 vs NNCF INT8 in OpenVINO), per network and
    input; the line at 1 is parity."""
    floats = {(r["net"], r["size"], r["batch"]): r for r in rows
              if r.get("table") != "int8" and r.get("form") == "RM"}
    int8 = {(r["net"], r["size"], r["batch"]): r for r in rows if r.get("table") == "int8"}
    keys = [k for k in floats if floats[k].get("openvino_f32")]
    if not keys:
        return

    def ratio(a, b):
        return a / b if a and b else None

    series = [("f32", [ratio(floats[k].get("rmnet_onednn"), floats[k].get("openvino_f32")) for k in keys]),
              ("bf16", [ratio(floats[k].get("rmnet_onednn_bf16"), floats[k].get("openvino_bf16")) for k in keys]),
              ("int8", [ratio(int8.get(k, {}).get("rm_int8"), int8.get(k, {}).get("ov_nncf_int8_rm")) for k in keys])]
    grouped_bars(path, [f"{n}\n{s}x{s} b{b}" for n, s, b in keys], series, "rmnet images/s / OpenVINO images/s",
                 f"rmnet against OpenVINO on the same plain network ({subtitle})", group_width=1.1, fontsize=7)


def plot_shortcuts(rows, path, subtitle):
    """Grouped bars: rmnet's onednn runtime (f32) on the RM network with and without Dirac shortcuts,
    and OpenVINO f32 on the same RM network, over OpenVINO f32 on the residual original (the line at 1:
    as fast as not converting)."""
    orig = {(r["net"], r["size"], r["batch"]): r for r in rows if r.get("form") == "original"}
    rm = [r for r in rows if r.get("form") == "RM" and r.get("rmnet_onednn_noshort")
          and orig.get((r["net"], r["size"], r["batch"]), {}).get("openvino_f32")]
    if not rm:
        return
    base = [orig[(r["net"], r["size"], r["batch"])]["openvino_f32"] for r in rm]
    series = [("rmnet onednn, Dirac shortcuts", "rmnet_onednn"), ("rmnet onednn, every channel", "rmnet_onednn_noshort"),
              ("OpenVINO f32, same RM network", "openvino_f32")]
    grouped_bars(path, [f"{r['net']}\n{r['size']}x{r['size']} b{r['batch']}" for r in rm],
                 [(name, [r.get(k, 0.0) / b for r, b in zip(rm, base)]) for name, k in series],
                 "images/s over OpenVINO f32 on the residual original",
                 f"RM networks, f32: as fast as not converting? ({subtitle})")


def shortcuts_path(path):
    p = pathlib.Path(path)
    return p.with_name(p.stem + "_shortcuts" + p.suffix)


def vs_openvino_path(path):
    p = pathlib.Path(path)
    return p.with_name(p.stem + "_vs_openvino" + p.suffix)


if __name__ == "__main__":
    main()

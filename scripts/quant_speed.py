#!/usr/bin/env python3
"""INT8 speed goals: rmnet's RM-converted INT8 network against its float32 forms and against PyTorch's and
ONNX Runtime's own INT8 of the residual original, on the same network, weights, batch and threads.

For each network (torchvision resnet18 by default; resnet50, mobilenet_v2 with --nets; random weights,
torch.manual_seed(0)) and input size (32: batch --batch; 224: batch --batch-large) it measures images/s of

  1. the residual original, float32: torch eager; torch.compile with Inductor freezing (under no_grad),
     PyTorch's fastest float32 CPU path;
  2. the residual original, INT8: PyTorch PT2E + X86InductorQuantizer, compiled (if
     torch.ao.quantization.quantize_pt2e imports), else PyTorch FX (prepare_fx with the "x86" qconfig
     mapping, calibrate, convert_fx) eager and torch.compile'd; ONNX Runtime quantize_static (QDQ,
     per-channel, u8 activations / s8 weights) of the original's float ONNX (opset 17);
  3. the RM plain network, float32: `rmnet bench --runtime onednn` and `--runtime torchscript`;
  4. the RM plain network, INT8 (`rmnet quantize`, folder calibration set): `rmnet bench --runtime int8`.

Ratios: RM INT8 / original torch.compile float32 (goal >= 2x), RM INT8 / RM onednn float32 (goal >= 3x,
at batch 32), RM INT8 / PyTorch INT8 of the original (expected < 1: the plain form has 1.65-3.9x the MACs
of the residual one), RM INT8 / ONNX Runtime INT8 of the original.

Calibration: synthetic smooth-noise RGB PNGs written as a folder data set (DIR/train/<class>, DIR/val/<class>),
already at rmnet's resize size (size * 8 / 7) so that rmnet's eval transform (resize shorter side to
size * 8 / 7, center crop, ImageNet mean/std) reduces to a center crop that this script replicates
exactly; the same images calibrate rmnet, PyTorch and ONNX Runtime. Random weights and synthetic images:
a speed measurement, the calibration set only needs to be plausible. Accuracy proxies without labels:
top-1 agreement (and, where logits are at hand, the relative logit error) of each INT8 variant with its
float32 model on the held-out val images (rmnet: `rmnet eval --compare`).

    flock /tmp/rmnet-cpu.lock scripts/quant_speed.py --rmnet build/rmnet --threads 2 --repeat 3 \\
        --out docs/quant_speed.md --json docs/quant_speed.json

Protocol everywhere: `warmup` untimed forwards, then `iters` timed ones; images/s = batch * iters / time;
--repeat K measures every runtime K times, interleaved, and keeps the best. A peer that fails (quantization,
compile, export) is reported as "-" with a one-line reason; the script continues.
"""
import argparse
import datetime
import json
import pathlib
import sys
import time
import warnings

import torch
import torchvision

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from speed_common import (add_shape_flags, shapes_of, agreement, batches, compile_frozen, count_macs, load_split, make_folder_dataset,  # noqa: E402
                          load_average_warning, nncf_int8_runner, ort_quantize, ort_session, predict, pt2e_api, sh,
                          time_fn, torch_fx, torch_pt2e, why)

# ---------------------------------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rmnet", default="build/rmnet", help="rmnet binary")
    ap.add_argument("--work", default="/tmp/rmnet_quant_speed", help="folder for weights, exports, images")
    ap.add_argument("--nets", nargs="+", default=["resnet18"], choices=["resnet18", "resnet50", "mobilenet_v2"])
    ap.add_argument("--threads", type=int, default=2)
    add_shape_flags(ap)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--warmup-large", type=int, default=3, help="untimed forwards at sizes > 64")
    ap.add_argument("--iters", type=int, default=20, help="timed forwards at sizes <= 64")
    ap.add_argument("--iters-large", type=int, default=5, help="timed forwards at sizes > 64")
    ap.add_argument("--repeat", type=int, default=1,
                    help="measure every runtime this many times, interleaved, and keep the best (noisy machines)")
    ap.add_argument("--calib-images", type=int, default=64, help="synthetic calibration images (train split)")
    ap.add_argument("--eval-images", type=int, default=32, help="held-out synthetic images for agreement (val split)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (float and INT8)")
    ap.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime")
    ap.add_argument("--openvino", action="store_true",
                    help="also NNCF INT8 in OpenVINO, of the original's ONNX and of rmnet's plain ONNX (the same "
                         "calibration images; run with the peers venv's python, scripts/peers_env.sh; idle machine)")
    ap.add_argument("--out", help="also write the Markdown table here")
    ap.add_argument("--json", help="also write all numbers as JSON here")
    a = ap.parse_args()

    warnings.filterwarnings("ignore")  # deprecation notices of torch.ao / torch.jit / torch.onnx
    torch.set_num_threads(a.threads)
    work = pathlib.Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    rmnet = str(pathlib.Path(a.rmnet).resolve())
    t_start = time.time()
    load, load_warning = load_average_warning()
    if load_warning:
        print(load_warning, flush=True)
    rows = []
    try:
        pt2e_api()
        pt_flow = "pt2e"
    except ImportError as e:
        pt_flow = "fx"
        print(f"PT2E unavailable ({why(e)}); PyTorch INT8 via the FX flow (x86 qconfig mapping)", flush=True)

    for net in a.nets:
        torch.manual_seed(0)
        orig = getattr(torchvision.models, net)().eval()
        weights = work / f"{net}.pth"
        torch.save(orig.state_dict(), weights)
        plain = work / f"{net}_plain.rmnet"
        plain_onnx = work / f"{net}_plain.onnx"
        try:
            sh([rmnet, "--threads", a.threads, "convert", "--torchvision", net, "--weights", weights, "--out", plain,
                "--onnx", plain_onnx])
        except RuntimeError as e:
            print(f"{net}: rmnet convert failed, network skipped: {e}", flush=True)
            continue
        onnx_float = work / f"{net}.onnx"
        onnx_err = None
        if (not a.no_ort or a.openvino) and not onnx_float.exists():
            try:
                torch.onnx.export(orig, torch.randn(1, 3, 224, 224), str(onnx_float), input_names=["input"],
                                  output_names=["logits"], dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}},
                                  opset_version=17, dynamo=False)
            except Exception as e:  # noqa: BLE001
                onnx_err = f"torch.onnx.export: {why(e)}"
                print(f"    {onnx_err}", flush=True)

        for size, batch in shapes_of(a):
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

            def bench(key, model, runtime):
                try:
                    sh([rmnet, "--threads", a.threads, "bench", "--model", model, *common, "--runtime", runtime,
                        "--json", bj])
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
            rows.append(r)

    # --- report
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
                  "| agree NNCF plain | agree RM INT8 |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            same = (r["rm_int8"] / r["ov_nncf_int8_rm"]) if r.get("rm_int8") and r.get("ov_nncf_int8_rm") else None
            lines.append(f"| {r['net']} | {r['size']}x{r['size']} | {r['batch']} | {f(r, 'ov_nncf_int8_orig')} "
                         f"| {f(r, 'ov_nncf_int8_rm')} | {f(r, 'rm_int8')} "
                         f"| {'-' if same is None else (f'**{same:.2f}x**' if same < 1 else f'{same:.2f}x')} "
                         f"| {agree(r, 'agree_ov_nncf_int8_rm')} | {agree(r, 'agree_rmnet_int8')} |")
    failures = [f"- {r['net']} {r['size']}x{r['size']}: {k}: {v}" for r in rows for k, v in r["errors"].items()]
    notes = [f"- {r['net']} {r['size']}x{r['size']}: torch.compile of the PyTorch INT8 model: dynamo counters "
             f"{r['pt_int8_compile_dynamo_counters']} (graph breaks / fallbacks: the compiled model may run eager "
             "quantized kernels)" for r in rows if r.get("pt_int8_compile_dynamo_counters")]
    if notes:
        lines += ["", "Notes:", ""] + notes
    if failures:
        lines += ["", "Failures (shown as -):", ""] + failures
    text = "\n".join(lines) + "\n"
    print("\n" + text, flush=True)
    if a.out:
        pathlib.Path(a.out).write_text(text)
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

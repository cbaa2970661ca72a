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
import copy
import datetime
import json
import logging
import pathlib
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
import torchvision

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from compare_speed import ort_session, time_fn  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def why(e):
    """One line out of an exception."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:160] if lines else ''}"


def sh(cmd):
    """Runs a command; raises RuntimeError (one line: the last stderr line) if it fails."""
    cmd = list(map(str, cmd))
    print("    $ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        lines = [ln.strip() for ln in r.stderr.splitlines() + r.stdout.splitlines() if ln.strip()]
        errs = [ln for ln in lines if "error" in ln.lower()]
        sub = next((c for c in cmd[1:] if not c.startswith("-") and not c.isdigit()), "")
        raise RuntimeError(f"{pathlib.Path(cmd[0]).name} {sub} failed (rc {r.returncode}): "
                           f"{(errs or lines or [''])[0][:200]}")
    return r.stdout


# ---------------------------------------------------------------------------------------------------- data
def make_folder_dataset(root, size, n_train, n_val, seed=0):
    """Smooth random RGB PNGs (low-resolution noise, bilinear upsampled, plus fine noise) in two classes,
    DIR/train/c{0,1} (calibration) and DIR/val/c{0,1} (held out), at rmnet's resize size size * 8 // 7."""
    from PIL import Image

    r = size * 8 // 7
    stamp = root / "done.json"
    spec = {"size": size, "train": n_train, "val": n_val, "seed": seed, "side": r}
    if stamp.exists() and json.loads(stamp.read_text()) == spec:
        return
    rng = np.random.default_rng(seed + size)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in range(2):
            d = root / split / f"c{c}"
            d.mkdir(parents=True, exist_ok=True)
            for f in d.glob("*.png"):
                f.unlink()
        for i in range(n):
            low = rng.integers(0, 256, size=(int(rng.integers(3, 9)),) * 2 + (3,), dtype=np.uint8)
            img = np.asarray(Image.fromarray(low).resize((r, r), Image.BILINEAR), dtype=np.float32)
            img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / split / f"c{i % 2}" / f"img{i:05d}.png")
    stamp.write_text(json.dumps(spec))


def load_split(root, split, size):
    """The split's images in rmnet's ImageFolder order (classes sorted, files sorted), through rmnet's
    folder eval transform: the images are already size * 8 // 7 square, so resize is the identity; center
    crop at (side - size) // 2; ImageNet mean/std. Returns float32 [N, 3, size, size]."""
    from PIL import Image

    out = []
    for cdir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
        for f in sorted(cdir.glob("*.png")):
            a = np.asarray(Image.open(f).convert("RGB"), dtype=np.float32)
            h, w = a.shape[:2]
            y0, x0 = (h - size) // 2, (w - size) // 2
            a = a[y0:y0 + size, x0:x0 + size]
            out.append(((a / 255.0 - MEAN) / STD).transpose(2, 0, 1))
    return torch.from_numpy(np.ascontiguousarray(np.stack(out)).astype(np.float32))


def batches(x, n=16):
    return [x[i:i + n] for i in range(0, x.shape[0], n)]


def count_macs(model, x):
    """Conv/linear multiply-accumulates per image (forward hooks)."""
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            total[0] += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total[0] += out[0].numel() * m.in_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x[:1])
    for h in hs:
        h.remove()
    return total[0]


# ---------------------------------------------------------------------------------------------------- peers
def compile_frozen(model, x):
    """torch.compile with Inductor freezing, static shapes, first call (the compile) under no_grad.
    No dynamo reset here: several compiled models live side by side within one (network, size)."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    fn = torch.compile(model, dynamic=False)
    t = time.perf_counter()
    with torch.no_grad():
        fn(x)
    return fn, time.perf_counter() - t


def predict(fn, images):
    with torch.no_grad():
        return torch.cat([fn(b) for b in batches(images)])


def agreement(ref_logits, logits):
    top1 = float((ref_logits.argmax(1) == logits.argmax(1)).double().mean())
    rel = float((logits - ref_logits).norm() / ref_logits.norm().clamp_min(1e-12))
    return top1, rel


def pt2e_api():
    """(prepare_pt2e, convert_pt2e, X86InductorQuantizer, get_default_x86_inductor_quantization_config, where)
    or raises ImportError: torch.ao first (as the issue asks), then torchao where PT2E moved."""
    try:
        from torch.ao.quantization.quantize_pt2e import convert_pt2e, prepare_pt2e
        import torch.ao.quantization.quantizer.x86_inductor_quantizer as xiq
        return prepare_pt2e, convert_pt2e, xiq.X86InductorQuantizer, xiq.get_default_x86_inductor_quantization_config, \
            "torch.ao"
    except ImportError as e:
        first = e
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        return prepare_pt2e, convert_pt2e, xiq.X86InductorQuantizer, xiq.get_default_x86_inductor_quantization_config, \
            "torchao"
    except ImportError:
        raise ImportError(f"{why(first)}; torchao not installed") from None


def torch_pt2e(orig, calib, example):
    prepare_pt2e, convert_pt2e, Quantizer, default_config, where = pt2e_api()
    q = Quantizer()
    q.set_global(default_config())
    exported = torch.export.export(copy.deepcopy(orig).eval(), (example,)).module()
    prepared = prepare_pt2e(exported, q)
    with torch.no_grad():
        for b in batches(calib):
            prepared(b)
    return convert_pt2e(prepared), where


def torch_fx(orig, calib, example):
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    prepared = prepare_fx(copy.deepcopy(orig).eval(), get_default_qconfig_mapping("x86"), (example,))
    with torch.no_grad():
        for b in batches(calib):
            prepared(b)
    return convert_fx(prepared).eval()


def ort_quantize(onnx_float, onnx_q, calib):
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_static)

    name = ort.InferenceSession(str(onnx_float), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: b.numpy()} for b in batches(calib, 8)])

        def get_next(self):
            return next(self.it, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "consider pre-processing", "expected bias to be an initializer"
    try:
        quantize_static(str(onnx_float), str(onnx_q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


# ---------------------------------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rmnet", default="build/rmnet", help="rmnet binary")
    ap.add_argument("--work", default="/tmp/rmnet_quant_speed", help="folder for weights, exports, images")
    ap.add_argument("--nets", nargs="+", default=["resnet18"], choices=["resnet18", "resnet50", "mobilenet_v2"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[32, 224])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32, help="batch at sizes <= 64")
    ap.add_argument("--batch-large", type=int, default=8, help="batch at sizes > 64")
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
    ap.add_argument("--out", help="also write the Markdown table here")
    ap.add_argument("--json", help="also write all numbers as JSON here")
    a = ap.parse_args()

    warnings.filterwarnings("ignore")  # deprecation notices of torch.ao / torch.jit / torch.onnx
    torch.set_num_threads(a.threads)
    work = pathlib.Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    rmnet = str(pathlib.Path(a.rmnet).resolve())
    t_start = time.time()
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
        try:
            sh([rmnet, "--threads", a.threads, "convert", "--torchvision", net, "--weights", weights, "--out", plain])
        except RuntimeError as e:
            print(f"{net}: rmnet convert failed, network skipped: {e}", flush=True)
            continue
        onnx_float = work / f"{net}.onnx"
        onnx_err = None
        if not a.no_ort and not onnx_float.exists():
            try:
                torch.onnx.export(orig, torch.randn(1, 3, 224, 224), str(onnx_float), input_names=["input"],
                                  output_names=["logits"], dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}},
                                  opset_version=17, dynamo=False)
            except Exception as e:  # noqa: BLE001
                onnx_err = f"torch.onnx.export: {why(e)}"
                print(f"    {onnx_err}", flush=True)

        for size in a.sizes:
            large = size > 64
            batch = a.batch_large if large else a.batch
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
                            xin = x.numpy() if key.startswith("ort") else x
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
        f"be plausible); PyTorch INT8: {pt_flow}; total {time.time() - t_start:.0f} s",
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

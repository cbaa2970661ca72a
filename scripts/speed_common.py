"""Shared helpers of the speed harness (scripts/compare_speed.py) and of
the experiments that time peers (experiments/common.py re-exports the OpenVINO ones): timing,
running the CLI, PyTorch's deploy paths (TorchScript freeze + optimize_for_inference, torch.compile
with Inductor freezing), PyTorch's and ONNX Runtime's INT8, OpenVINO (f32, bf16) and NNCF INT8,
synthetic calibration images, MAC counting. Import from a script in scripts/:

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent)); import speed_common

torch, torchvision and numpy come from the project venv; onnxruntime too; openvino and nncf from
the peers venv (scripts/peers_env.sh) and only when an OpenVINO peer is asked for."""
import copy
import json
import logging
import os
import pathlib
import subprocess
import time

import numpy as np
import torch
import torch.nn as nn

from rmnet_sequential import ChannelClamp

def add_shape_flags(ap):
    """--sizes/--batch/--batch-large (one batch per size) or --shapes SIZE:BATCH ... (any pairs)."""
    ap.add_argument("--sizes", nargs="+", type=int, default=[32, 224])
    ap.add_argument("--batch", type=int, default=32, help="batch at sizes <= 64")
    ap.add_argument("--batch-large", type=int, default=8, help="batch at sizes > 64")
    ap.add_argument("--shapes", nargs="+", metavar="SIZE:BATCH",
                    help="input size and batch pairs, e.g. 224:1 224:8 32:1 32:32 (instead of --sizes/--batch)")


def shapes_of(a):
    """[(size, batch), ...] of the parsed --shapes, else of --sizes with --batch / --batch-large."""
    if a.shapes:
        out = []
        for item in a.shapes:
            size, sep, batch = item.partition(":")
            if not sep or not size.isdigit() or not batch.isdigit() or int(size) < 1 or int(batch) < 1:
                raise SystemExit(f"--shapes: '{item}' is not SIZE:BATCH with positive integers")
            out.append((int(size), int(batch)))
        return out
    return [(size, a.batch_large if size > 64 else a.batch) for size in a.sizes]


def time_fn(fn, x, warmup, iters):
    for _ in range(warmup):
        fn(x)
    t = time.perf_counter()
    for _ in range(iters):
        fn(x)
    return x.shape[0] * iters / (time.perf_counter() - t)


class MinMax(nn.Module):
    def __init__(self, lo, hi):
        super().__init__()
        self.register_buffer("lo", lo.view(1, -1, 1, 1).clone())
        self.register_buffer("hi", hi.view(1, -1, 1, 1).clone())

    def forward(self, x):
        return torch.minimum(torch.maximum(x, self.lo), self.hi)


def scriptable(model):
    """ChannelClamp with the same bounds on every channel -> scalar clamp (ReLU6 / Identity), so that
    the frozen-graph passes can fuse it; mixed bounds -> minimum/maximum (oneDNN's conversion pass takes
    scalar clamp bounds only). The same rewrite rmnet's deploy runtime makes."""
    for name, m in list(model.named_children()):
        if isinstance(m, ChannelClamp):
            lo, hi = m.min, m.max
            if bool((lo == lo[0]).all()) and bool((hi == hi[0]).all()):
                a, b = float(lo[0]), float(hi[0])
                if a == float("-inf") and b == float("inf"):
                    new = nn.Identity()
                elif a == 0 and b == 6:
                    new = nn.ReLU6()
                elif a == 0 and b == float("inf"):
                    new = nn.ReLU()
                else:
                    new = nn.Hardtanh(a, b)
            else:
                new = MinMax(lo, hi)
            setattr(model, name, new)
    return model


def torchscript_optimized(model, x):
    """PyTorch's best CPU path: script, freeze, optimize_for_inference."""
    with torch.no_grad():
        s = torch.jit.script(model.eval())
        f = torch.jit.freeze(s)
        try:
            return torch.jit.optimize_for_inference(f), "frozen+ofi"
        except Exception as e:  # noqa: BLE001
            print(f"    optimize_for_inference failed ({str(e).splitlines()[0][:80]}); frozen only", flush=True)
            return f, "frozen"


def compiled(model, x):
    """torch.compile with Inductor's freezing (weights constant-folded, oneDNN convolutions with prepacked
    weights and fused post-ops), compiled for x's shape under no_grad."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    torch._dynamo.reset()
    fn = torch.compile(model.eval())
    t = time.perf_counter()
    with torch.no_grad():
        fn(x)
    return fn, time.perf_counter() - t


def ort_session(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})


def run(cmd, env=None):
    """Runs a command (with `env` added to the environment); exits with its output if it fails."""
    print("    $ " + "".join(f"{k}={v} " for k, v in (env or {}).items()) + " ".join(map(str, cmd)), flush=True)
    r = subprocess.run(list(map(str, cmd)), capture_output=True, text=True,
                       env=dict(os.environ, **env) if env else None)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{r.stdout}\n{r.stderr}")
    return r.stdout


# ------------------------------------------------------------------------------- INT8 peers, data
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def why(e):
    """One line out of an exception."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:160] if lines else ''}"


def sh(cmd, env=None):
    """Runs a command (with `env` added to the environment); raises RuntimeError (one line: the last
    stderr line) if it fails."""
    cmd = list(map(str, cmd))
    print("    $ " + "".join(f"{k}={v} " for k, v in (env or {}).items()) + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **env) if env else None)
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


# ---------------------------------------------------------------------------------------- OpenVINO
OPENVINO_F32 = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2, "NUM_STREAMS": 1,
                "PERFORMANCE_HINT": "LATENCY"}


def openvino_config(precision="f32", threads=2):
    """OpenVINO CPU settings for a like-for-like comparison: the inference precision said aloud (on a
    CPU with avx512_bf16 or AMX OpenVINO runs bf16 by default), `threads` threads, one stream,
    latency mode. OpenVINO pins its threads: time it on an otherwise idle machine."""
    return {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY"}


def openvino_runner(onnx_path, input_shape, precision="f32", threads=2):
    """A callable numpy [N, C, H, W] -> logits running the ONNX model in OpenVINO (compiled once for
    this static shape, synchronous requests): time it with time_fn like the other peers."""
    compiled = openvino_compile(onnx_path, input_shape[0], input_shape[1:], openvino_config(precision, threads))
    req = compiled.create_infer_request()
    out = compiled.outputs[0]
    return lambda x: req.infer({0: x})[out]


def nncf_int8_runner(onnx_path, input_shape, calib, threads=2, precision="f32"):
    """OpenVINO's INT8 as its users make it: `nncf.quantize` (default preset: symmetric per-channel
    weights, activations per tensor) of the ONNX model at the static `input_shape`, calibrated on
    `calib` (float32 torch [N, C, H, W], fed in batches of the static batch), compiled with the
    precision hint `precision` for the layers NNCF leaves in float. Returns a runner like
    openvino_runner."""
    q = nncf_int8_model(onnx_path, input_shape[1:], calib, batch=input_shape[0])
    compiled = openvino_compile(q, input_shape[0], input_shape[1:], openvino_config(precision, threads))
    req = compiled.create_infer_request()
    out = compiled.outputs[0]
    return lambda x: req.infer({0: x})[out]


def openvino_compile(onnx_path, batch, image_shape, config=None):
    """An OpenVINO CPU compiled model of an ONNX file (or of an openvino.Model, e.g. NNCF's INT8 one),
    reshaped to a static batch."""
    import openvino as ov
    core = ov.Core()
    m = onnx_path.clone() if isinstance(onnx_path, ov.Model) else core.read_model(str(onnx_path))
    m.reshape({m.inputs[0].any_name: [batch, *image_shape]})
    return core.compile_model(m, "CPU", dict(config or OPENVINO_F32))


def openvino_speed(onnx_path, batch, image_shape, rounds=5, seconds=1.0, warmup=0.3, config=None, check=None):
    """Best-of-`rounds` images/s of the ONNX model (or openvino.Model) in OpenVINO (synchronous
    requests of `batch` random images, each round running for `seconds`). With check=(module, x):
    also the largest |OpenVINO - PyTorch| logit difference on x[:batch]."""
    compiled = openvino_compile(onnx_path, batch, image_shape, config)
    req = compiled.create_infer_request()
    x = np.random.default_rng(0).standard_normal((batch, *image_shape)).astype(np.float32)
    result = {}
    if check is not None:
        module, xs = check
        xb = xs[:batch].numpy()
        ov_out = req.infer({0: xb})[compiled.outputs[0]]
        with torch.no_grad():
            ref = module.eval()(torch.from_numpy(xb)).numpy()
        result["max_abs_diff"] = float(np.abs(ov_out - ref).max())
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < warmup:
        req.infer({0: x})
    best = 0.0
    for _ in range(rounds):
        n, t0 = 0, time.perf_counter()
        while True:
            req.infer({0: x})
            n += 1
            dt = time.perf_counter() - t0
            if dt >= seconds:
                break
        best = max(best, n * batch / dt)
    result["images_per_second"] = best
    return result


def nncf_int8_model(onnx_path, image_shape, calib, batch=32):
    """`nncf.quantize` (default preset: symmetric per-channel weights, activations per tensor) of an
    ONNX model read into OpenVINO, calibrated on `calib` (float32 torch or numpy [N, C, H, W]) in
    batches of `batch`: the openvino.Model (any batch: openvino_compile reshapes it)."""
    import nncf
    import openvino as ov

    m = ov.Core().read_model(str(onnx_path))
    m.reshape({m.inputs[0].any_name: [batch, *image_shape]})
    calib = np.asarray(calib, dtype=np.float32)
    items = [calib[i:i + batch] for i in range(0, calib.shape[0] - batch + 1, batch)]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        return nncf.quantize(m, nncf.Dataset(items), subset_size=len(items))
    finally:
        root.setLevel(level)


def openvino_predict(model, images, batch=500, config=None):
    """Predicted classes of an ONNX file or openvino.Model on numpy/torch float32 [N, C, H, W]
    images (N a multiple of `batch`, or the last batch run on its own compiled shape)."""
    images = np.asarray(images, dtype=np.float32)
    preds = []
    compiled = {}
    for i in range(0, images.shape[0], batch):
        x = images[i:i + batch]
        if x.shape[0] not in compiled:
            c = openvino_compile(model, x.shape[0], x.shape[1:], config)
            compiled[x.shape[0]] = (c.create_infer_request(), c.outputs[0])
        req, out = compiled[x.shape[0]]
        preds.append(np.asarray(req.infer({0: x})[out]).argmax(1))
    return np.concatenate(preds)


def load_average_warning(limit=0.5):
    """The 1-minute load average, and a warning line when it is above `limit` (timing then
    measures contention, not the network)."""
    load = os.getloadavg()[0]
    if load > limit:
        return load, (f"warning: 1-minute load average {load:.2f} > {limit}: the machine is busy, "
                      "timings will be low and noisy")
    return load, None

"""The INT8 peers of the quantization study (docs/QUANTIZATION.md) on the study's own trained
networks: the *residual originals* rebuilt in PyTorch from the rmnet model files (the state-dict
names are torchvision's), checked to predict exactly what `rmnet eval` reported, then
  - PyTorch's float32 on its fastest path (torch.compile, Inductor freezing) for scale;
  - PyTorch's own x86 INT8: PT2E + X86InductorQuantizer when this torch has it, else the FX flow
    (prepare_fx with the "x86" qconfig mapping, calibrate, convert_fx);
  - ONNX Runtime quantize_static (QDQ, per-channel s8 weights, u8 activations, MinMax) on the
    original's ONNX (torch.onnx.export);
each calibrated on the same training images as `rmnet quantize` (the indices its --json report
lists), evaluated on the 10,000 Fashion-MNIST test images, timed at batch 32 with 2 threads.

  quant_peers.py --study runs/quant [--nets resnet8,mobilenet_v2_w0.5,resnet50] [--lock LOCK]

Writes <net>/peers.json per network and merges it into study.json (key "peers")."""
import argparse
import contextlib
import copy
import fcntl
import json
import logging
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from quant_study import idx  # noqa: E402  (the same test/train arrays, normalised the same way)

THREADS = 2


# ---------------------------------------------------------------------------------------------- models
class CifarResNet(nn.Module):
    """rmnet's CIFAR-stem ResNet (3x3 stem, stride 1, no max-pool) with torchvision's blocks and names."""

    def __init__(self, block, layers, widths, in_channels, num_classes, stem):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        planes_in = stem
        for s, (n, w) in enumerate(zip(layers, widths)):
            blocks = []
            for b in range(n):
                stride = 2 if (s > 0 and b == 0) else 1
                down = None
                if stride != 1 or planes_in != w * block.expansion:
                    down = nn.Sequential(nn.Conv2d(planes_in, w * block.expansion, 1, stride, bias=False),
                                         nn.BatchNorm2d(w * block.expansion))
                blocks.append(block(planes_in, w, stride, down))
                planes_in = w * block.expansion
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.n_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes_in, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for s in range(self.n_stages):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build(arch, options):
    import torchvision
    from torchvision.models.resnet import BasicBlock, Bottleneck
    cin, nc = options["in_channels"], options["num_classes"]
    if arch == "resnet8":
        return CifarResNet(BasicBlock, [1, 1, 1], [16, 32, 64], cin, nc, 16)
    if arch == "resnet50":
        m = torchvision.models.resnet50(num_classes=nc)
        m.conv1 = nn.Conv2d(cin, 64, 7, 2, 3, bias=False)
        return m
    if arch == "mobilenet_v2_cifar":  # stem and stage-2 stride 1 (rmnet's mobilenet_v2_cifar)
        setting = [[1, 16, 1, 1], [6, 24, 2, 1], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
                   [6, 320, 1, 1]]
        m = torchvision.models.MobileNetV2(num_classes=nc, width_mult=options["width_mult"],
                                           inverted_residual_setting=setting)
        first = m.features[0][0]
        m.features[0][0] = nn.Conv2d(cin, first.out_channels, 3, 1, 1, bias=False)
        return m
    raise SystemExit(f"quant_peers: no PyTorch model for '{arch}'")


def load_original(path):
    blob = torch.load(str(path), weights_only=False)
    header = json.loads(blob["rmnet"])
    model = build(header["options"]["arch"], header["options"])
    state = {k: v for k, v in blob["state"].items() if k in model.state_dict()}
    missing = [k for k in model.state_dict() if k not in state]
    if missing:
        raise SystemExit(f"quant_peers: {path}: parameters missing for the PyTorch model: {missing[:5]}")
    model.load_state_dict(state)
    return model.eval()


# ---------------------------------------------------------------------------------------------- peers
def batches(x, n):
    return [x[i:i + n] for i in range(0, len(x), n)]


def predict(fn, x, n=500):
    with torch.no_grad():
        return np.concatenate([np.asarray(fn(torch.from_numpy(b))).argmax(1) for b in batches(x, n)])


def speed(fn, x, seconds=3.0):
    xb = torch.from_numpy(x[:32])
    with torch.no_grad():
        for _ in range(3):
            fn(xb)
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            fn(xb)
            n += 1
    return 32 * n / (time.perf_counter() - t0)


def pytorch_int8(model, calib):
    """PT2E + X86InductorQuantizer + torch.compile when available, else FX (x86)."""
    example = (torch.from_numpy(calib[:1]),)
    try:
        from torch.ao.quantization.quantize_pt2e import convert_pt2e, prepare_pt2e
        import torch.ao.quantization.quantizer.x86_inductor_quantizer as xiq
        q = xiq.X86InductorQuantizer()
        q.set_global(xiq.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(torch.export.export(copy.deepcopy(model), example).module(), q)
        with torch.no_grad():
            for b in batches(calib, 64):
                prepared(torch.from_numpy(b))
        import torch._inductor.config as inductor_config
        inductor_config.freezing = True
        return torch.compile(convert_pt2e(prepared)), "pt2e+x86_inductor"
    except Exception as e:  # torch 2.14 ships neither torch.ao.quantization.quantize_pt2e nor the quantizer
        print(f"  PT2E unavailable ({type(e).__name__}: {str(e).splitlines()[0][:90]}); FX x86 flow", flush=True)
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.backends.quantized.engine = "x86"
    prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), example)
    with torch.no_grad():
        for b in batches(calib, 64):
            prepared(torch.from_numpy(b))
    return convert_fx(prepared).eval(), "fx_x86"


def ort_int8(model, calib, work):
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    f32, q8 = work / "original.onnx", work / "original_int8.onnx"
    torch.onnx.export(model, torch.from_numpy(calib[:1]), str(f32), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}}, opset_version=17, dynamo=False)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": b} for b in batches(calib, 64)])

        def get_next(self):
            return next(self.it, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(str(f32), str(q8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    runs = {}
    for tag, path in (("float32", f32), ("int8", q8)):
        so = ort.SessionOptions()
        so.intra_op_num_threads = THREADS
        s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        runs[tag] = lambda x, s=s: s.run(None, {"input": np.ascontiguousarray(np.asarray(x))})[0]
    return runs


@contextlib.contextmanager
def locked(path):
    if not path:
        yield
        return
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default="runs/quant")
    ap.add_argument("--nets", default="resnet8,mobilenet_v2_w0.5,resnet50")
    ap.add_argument("--lock", default=None)
    ap.add_argument("--report", default="quantize_mse_act.json",
                    help="the rmnet quantize --json report whose calibration indices the peers use")
    a = ap.parse_args()
    torch.set_num_threads(THREADS)
    study_dir = pathlib.Path(a.study)
    test_x, test_y = idx("t10k")
    train_x, _ = idx("train")
    study_path = study_dir / "study.json"
    for name in a.nets.split(","):
        work = study_dir / name
        report = json.loads((work / a.report).read_text())
        calib = train_x[np.asarray(report["calibration_indices"], dtype=np.int64)]
        ev = json.loads((work / "eval_float.json").read_text())
        print(f"{name}: {len(calib)} calibration images (rmnet's choice), residual top-1 by rmnet "
              f"{ev['model']['top1']:.4f}", flush=True)
        with locked(a.lock):
            model = load_original(work / "final.rmnet")
            ref = predict(model, test_x)
            res = {"calibration_images": int(len(calib)),
                   "float32": {"top1": float((ref == test_y).mean()), "images_per_second": speed(model, test_x)}}
            # the rebuilt original must be rmnet's network: same top-1 (and so the same predictions up to ties)
            if abs(res["float32"]["top1"] - ev["model"]["top1"]) > 2e-4:
                raise SystemExit(f"{name}: the PyTorch rebuild scores {res['float32']['top1']:.4f}, "
                                 f"rmnet {ev['model']['top1']:.4f}: not the same network")
            # PyTorch's fastest float32 path for the original: torch.compile with Inductor freezing
            try:
                import torch._inductor.config as inductor_config
                inductor_config.freezing = True
                compiled = torch.compile(model, dynamic=False)
                with torch.no_grad():
                    compiled(torch.from_numpy(test_x[:32]))  # the compile, at the timed shape
                res["float32_compile"] = {"images_per_second": speed(compiled, test_x)}
            except Exception as e:  # reported, not hidden
                res["float32_compile"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
            print(f"  float32 torch.compile {res['float32_compile']}", flush=True)
            qm, flow = pytorch_int8(model, calib)
            p = predict(qm, test_x)
            res["pytorch_int8"] = {"flow": flow, "top1": float((p == test_y).mean()),
                                   "agreement_with_float": float((p == ref).mean()),
                                   "images_per_second": speed(qm, test_x)}
            print(f"  float32 {res['float32']}\n  pytorch {res['pytorch_int8']}", flush=True)
            try:
                runs = ort_int8(model, calib, work)
                for tag, fn in runs.items():
                    p = predict(fn, test_x)
                    res[f"ort_{tag}_original"] = {"top1": float((p == test_y).mean()),
                                                   "agreement_with_float": float((p == ref).mean()),
                                                   "images_per_second": speed(fn, test_x)}
                print(f"  ort {res['ort_int8_original']}", flush=True)
            except Exception as e:  # reported, not hidden
                res["ort_original"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
                print(f"  ort failed: {res['ort_original']['error']}", flush=True)
        (work / "peers.json").write_text(json.dumps(res, indent=2) + "\n")
        study = json.loads(study_path.read_text()) if study_path.exists() else {}
        study.setdefault(name, {})["peers"] = res
        study_path.write_text(json.dumps(study, indent=2) + "\n")


if __name__ == "__main__":
    main()

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
import json
import logging
import pathlib
import sys

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import THREADS, batches, fm_arrays as idx, load_original, locked, predict_fn as predict, pytorch_int8, speed  # noqa: E402,F401


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

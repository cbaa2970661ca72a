"""INT8 end to end through the CLI: a converted resnet8 is quantized on Fashion-MNIST images
(`rmnet quantize`), exported as QDQ ONNX (`rmnet export --onnx`), and run by ONNX Runtime, which
must fuse it into its INT8 kernels (QLinearConv) and agree with rmnet's own INT8 runtime on the
top-1 class of >= 99% of the 10,000 test images; the ONNX scales are the model file's. Also the
CLI's errors: a residual model, a missing calibration set, an empty one.
Usage: test_quant_onnx.py RMNET_BINARY WORK_DIR"""
import gzip
import json
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch

warnings.filterwarnings("ignore")
rmnet, work = sys.argv[1], pathlib.Path(sys.argv[2])
work.mkdir(parents=True, exist_ok=True)
failures = 0


def run(*args, ok=True):
    r = subprocess.run([rmnet, *map(str, args)], capture_output=True, text=True)
    if ok and r.returncode != 0:
        sys.exit(f"rmnet {' '.join(map(str, args))} failed:\n{r.stdout}{r.stderr}")
    return r


def check(cond, what):
    global failures
    failures += not cond
    print(f"{'ok  ' if cond else 'FAIL'} {what}")


r8, plain, q, qonnx, fonnx = (work / n for n in ["r8.rmnet", "p.rmnet", "q.rmnet", "q.onnx", "p.onnx"])
# a briefly trained resnet8 (one epoch on 3000 images: predictions spread over the classes)
run("train", "--arch", "resnet8", "--dataset", "fashion-mnist", "--epochs", "1", "--max-train-samples", "3000",
    "--batch-size", "64", "--lr", "0.05", "--workers", "1", "--seed", "0", "--out", work / "train")
r8.write_bytes((work / "train" / "final.rmnet").read_bytes())
run("convert", "--model", r8, "--out", plain, "--verify-size", "28", "--onnx", fonnx)
run("quantize", "--model", plain, "--calib-dataset", "fashion-mnist", "--calib-images", "256", "--out", q,
    "--json", work / "quant.json")
# resnet8: three RM blocks, each with a non-negative input (after a ReLU): all pass their codes unchanged
check(json.loads((work / "quant.json").read_text())["exact_copy_blocks"] == 3, "3 RM blocks with exact copies")
run("export", "--model", q, "--onnx", qonnx)
run("eval", "--model", q, "--dataset", "fashion-mnist", "--predictions", work / "pred.txt", "--json",
    work / "eval.json")
ours = np.array([int(v) for v in (work / "pred.txt").read_text().split()])
check(json.loads((work / "eval.json").read_text())["model"]["runtime"] == "int8", "rmnet eval runs the int8 runtime")

# Fashion-MNIST test images, the eval transform: (x / 255 - 0.2860) / 0.3530
with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
x = ((images.astype(np.float32) / 255 - 0.2860) / 0.3530).astype(np.float32)

proto = onnx.load(str(qonnx))
onnx.checker.check_model(proto, full_check=True)
ops = {n.op_type for n in proto.graph.node}
check({"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops and "Add" not in ops, f"QDQ graph ({sorted(ops)})")
inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
state = torch.load(str(q), weights_only=False)["state"]
check(abs(float(inits["input_scale"]) - state["input_scale"].item()) < 1e-12 and
      int(inits["input_zero_point"]) == state["input_zero_point"].item(), "input scale/zero point as in the model file")
check(np.array_equal(inits["l0.weight_q"], state["0.weight"].numpy()), "int8 weights as in the model file")

so = ort.SessionOptions()
so.optimized_model_filepath = str(work / "q_ort.onnx")
sess = ort.InferenceSession(str(qonnx), so, providers=["CPUExecutionProvider"])
fused = {n.op_type for n in onnx.load(str(work / "q_ort.onnx")).graph.node}
check("QLinearConv" in fused, f"ONNX Runtime runs INT8 kernels ({sorted(fused)[:8]}...)")
logits = np.concatenate([sess.run(None, {"input": x[i:i + 1000]})[0] for i in range(0, len(x), 1000)])
theirs = logits.argmax(1)
agree = float((theirs == ours).mean())
check(agree >= 0.99, f"ONNX Runtime QDQ vs rmnet int8 top-1 agreement {agree:.4f} (>= 0.99)")
check(len(set(ours.tolist())) >= 3, f"predictions are not degenerate ({len(set(ours.tolist()))} classes)")
flt = np.concatenate([ort.InferenceSession(str(fonnx)).run(None, {"input": x[i:i + 1000]})[0]
                      for i in range(0, len(x), 1000)])
rel = float(np.abs(logits - flt).max() / np.abs(flt).max())
check(rel < 0.1, f"QDQ logits vs the float network's: rel error {rel:.4f} (< 0.1)")

# errors
r = run("quantize", "--model", r8, "--calib-dataset", "fashion-mnist", "--out", work / "x.rmnet", ok=False)
check(r.returncode == 1 and "residual model" in r.stderr and "convert" in r.stderr, "residual model refused: " + r.stderr.strip())
r = run("quantize", "--model", plain, "--calib-dataset", "fashion-mnist", "--data", work / "nowhere", "--out",
        work / "x.rmnet", ok=False)
check(r.returncode == 1 and "nowhere" in r.stderr, "missing calibration set: " + r.stderr.strip())
empty = work / "empty"
for split in ["train", "val"]:
    (empty / split).mkdir(parents=True, exist_ok=True)
r = run("quantize", "--model", plain, "--calib-dataset", "folder", "--data", empty, "--out", work / "x.rmnet", ok=False)
check(r.returncode == 1 and ("empty" in r.stderr or "no " in r.stderr), "empty calibration set: " + r.stderr.strip())
check(not (work / "x.rmnet").exists(), "nothing written by the failed runs")
sys.exit(1 if failures else 0)

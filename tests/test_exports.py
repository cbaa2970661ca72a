"""Exports against torchvision, in Python: torchvision models with non-trivial BN statistics,
saved the ordinary way, converted with the rmnet CLI, loaded back through TorchScript
(torch.jit.load) and as a torch.nn.Sequential from the .pth export; all must give torchvision's
own logits. Usage: test_exports.py RMNET_BINARY WORK_DIR"""
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "scripts"))
from rmnet_sequential import load_sequential  # noqa: E402
from make_torchvision_weights import randomize_batchnorm  # noqa: E402  (tests/ is sys.path[0])

warnings.filterwarnings("ignore")
rmnet, work = sys.argv[1], pathlib.Path(sys.argv[2])
work.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
failures = 0
for name in ["resnet18", "mobilenet_v2"]:
    m = randomize_batchnorm(getattr(torchvision.models, name)(num_classes=7))
    torch.save(m.state_dict(), work / f"{name}.pth")
    for keep_bn in [False, True]:
        tag = f"{name}{'_bn' if keep_bn else ''}"
        cmd = [rmnet, "convert", "--torchvision", name, "--weights", str(work / f"{name}.pth"),
               "--out", str(work / f"{tag}.rmnet"), "--torchscript", str(work / f"{tag}.pt"),
               "--pth", str(work / f"{tag}_plain.pth"), "--onnx", str(work / f"{tag}.onnx")]
        cmd += ["--keep-bn"] if keep_bn else []
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        x = torch.randn(2, 3, 64, 64) * 3
        with torch.no_grad():
            ref = m(x)
            ts = torch.jit.load(str(work / f"{tag}.pt"))(x)
            seq = load_sequential(work / f"{tag}_plain.pth")(x)
        proto = onnx.load(str(work / f"{tag}.onnx"))
        onnx.checker.check_model(proto, full_check=True)
        ops = {n.op_type for n in proto.graph.node}
        if "Add" in ops or "Sum" in ops:
            print(f"{tag}: the ONNX graph holds an Add")
            failures += 1
        sess = ort.InferenceSession(str(work / f"{tag}.onnx"))
        onx = torch.from_numpy(sess.run(None, {"input": x.numpy().astype(np.float32)})[0])
        for what, y in [("TorchScript", ts), ("Sequential(.pth)", seq), ("ONNX Runtime", onx)]:
            rel = ((y - ref).abs().max() / ref.abs().max()).item()
            ok = rel <= 1e-4
            failures += not ok
            print(f"{tag:18} {what:18} rel error {rel:.2e} {'ok' if ok else 'FAIL'}")
        # the graph holds no residual add: TorchScript code has no aten::add of activations
        code = torch.jit.load(str(work / f"{tag}.pt")).code
        if "torch.add" in code or " + " in code:
            print(f"{tag}: TorchScript code contains an addition")
            failures += 1

# The model zoo's own architectures (SE layers, PReLU reserves, grouped reserves, RepVGG): their
# exports must agree with each other (the C++ tests tie the plain network and its TorchScript to
# the residual model).
for arch in ["se_resnet20", "preact_resnet20", "rmnet26x3_32", "repvgg8_cifar", "mobilenet_v2_v1_cifar"]:
    res, tag = work / f"{arch}.rmnet", work / arch
    subprocess.run([rmnet, "init", "--arch", arch, "--num-classes", "10", "--track-stats", "--random-bn",
                    "--out", str(res)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([rmnet, "convert", "--model", str(res), "--out", f"{tag}_plain.rmnet", "--torchscript",
                    f"{tag}.pt", "--pth", f"{tag}_plain.pth", "--onnx", f"{tag}.onnx"], check=True,
                   stdout=subprocess.DEVNULL)
    x = torch.randn(2, 3, 32, 32) * 3
    with torch.no_grad():
        ref = torch.jit.load(f"{tag}.pt")(x)
        seq = load_sequential(f"{tag}_plain.pth")(x)
    onnx.checker.check_model(onnx.load(f"{tag}.onnx"), full_check=True)
    onx = torch.from_numpy(ort.InferenceSession(f"{tag}.onnx").run(None, {"input": x.numpy()})[0])
    for what, y in [("Sequential(.pth)", seq), ("ONNX Runtime", onx)]:
        rel = ((y - ref).abs().max() / ref.abs().max()).item()
        ok = rel <= 1e-4
        failures += not ok
        print(f"{arch:22} {what:18} vs TorchScript rel error {rel:.2e} {'ok' if ok else 'FAIL'}")
sys.exit(1 if failures else 0)

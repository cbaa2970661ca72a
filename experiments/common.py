"""Shared helpers of the experiments: Fashion-MNIST (IDX) with rmnet's exact preprocessing, rmnet
model files rebuilt as PyTorch modules, evaluation, rmnet's fine-tuning recipe, MAC counting and
OpenVINO timing. One module, no state; import it from a script in this folder:

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent)); import common

Needs torch and numpy (the project venv); openvino only for `openvino_speed` (the peers venv,
scripts/peers_env.sh)."""
import contextlib
import copy
import fcntl
import gzip
import json
import math
import pathlib
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parent.parent
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # rmnet's default (Debian's dataset-fashion-mnist)
# rmnet's normalization_for() (src/data/transforms.cpp)
NORMALIZATION = {"fashion-mnist": ([0.2860], [0.3530]), "mnist": ([0.1307], [0.3081])}


# ------------------------------------------------------------------------------------------------ data
def _idx_file(directory, stem):
    for name in (stem, stem + ".gz"):
        p = pathlib.Path(directory) / name
        if p.is_file():
            return p
    raise FileNotFoundError(f"{directory}: no {stem} or {stem}.gz")


def _read_idx(path, magic, ndim):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        d = f.read()
    got = int.from_bytes(d[:4], "big")
    if got != magic:
        raise ValueError(f"{path}: IDX magic 0x{got:08x}, expected 0x{magic:08x}")
    dims = [int.from_bytes(d[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(d, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_mnist(directory=FASHION_MNIST_DIR, train=False):
    """(images uint8 [N, 1, 28, 28], labels int64 [N]) of an MNIST-format IDX split, as rmnet's
    load_mnist reads them (plain or .gz files)."""
    prefix = "train" if train else "t10k"
    x = _read_idx(_idx_file(directory, f"{prefix}-images-idx3-ubyte"), 0x00000803, 3)
    y = _read_idx(_idx_file(directory, f"{prefix}-labels-idx1-ubyte"), 0x00000801, 1)
    if len(x) != len(y):
        raise ValueError(f"{directory}: {len(x)} {prefix} images but {len(y)} labels")
    return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def _norm_consts(dataset):
    mean, std = NORMALIZATION[dataset]
    # rmnet's crop_normalize: float(v) * float(1 / (255 std)) + float(-mean / std), in float32
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(1, -1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32).view(1, -1, 1, 1)
    return scale, shift


def normalize(images_u8, dataset="fashion-mnist"):
    """uint8 [N, C, H, W] -> float32, exactly rmnet's eval transform (no resize, no crop)."""
    scale, shift = _norm_consts(dataset)
    return images_u8.to(torch.float32) * scale + shift


def resize(x, size):
    """rmnet's then_resize: a bilinear resize of normalised float images [N, C, H, W] to size x size
    (half-pixel centres); x itself where size is None/0 or already the side."""
    if not size or (x.shape[-2] == size and x.shape[-1] == size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def augment(images_u8, gen, padding=2, flip=True, dataset="fashion-mnist", size=None):
    """rmnet's random_crop_flip on a batch: a random crop of the image padded with `padding` zero
    pixels (before normalisation, as rmnet does), mirrored with probability 1/2, normalised; then
    resized to `size` (rmnet's --image-size on a fixed-size data set)."""
    n, c, h, w = images_u8.shape
    padded = F.pad(images_u8, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
    mirror = torch.rand(n, generator=gen) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    ar_h, ar_w = torch.arange(h), torch.arange(w)
    rows = dy[:, None] + ar_h[None, :]                                                # [n, h]
    cols = dx[:, None] + torch.where(mirror[:, None], w - 1 - ar_w[None, :], ar_w[None, :])  # [n, w]
    idx_n = torch.arange(n)[:, None, None, None]
    idx_c = torch.arange(c)[None, :, None, None]
    out = padded[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]
    return resize(normalize(out, dataset), size)


# ------------------------------------------------------------------------------------------- models
# rmnet's ResNet depth table (src/models/resnet.cpp): block, blocks per stage, widths, stem, stem width.
RESNET_TABLE = {
    "resnet18": ("basic", [2, 2, 2, 2], [64, 128, 256, 512], "imagenet", 64),
    "resnet34": ("basic", [3, 4, 6, 3], [64, 128, 256, 512], "imagenet", 64),
    "resnet50": ("bottleneck", [3, 4, 6, 3], [64, 128, 256, 512], "imagenet", 64),
    "resnet101": ("bottleneck", [3, 4, 23, 3], [64, 128, 256, 512], "imagenet", 64),
    "resnet152": ("bottleneck", [3, 8, 36, 3], [64, 128, 256, 512], "imagenet", 64),
    "resnet18_cifar": ("basic", [2, 2, 2, 2], [64, 128, 256, 512], "cifar", 64),
    "resnet34_cifar": ("basic", [3, 4, 6, 3], [64, 128, 256, 512], "cifar", 64),
    **{f"resnet{6 * n + 2}": ("basic", [n, n, n], [16, 32, 64], "cifar", 16) for n in (1, 2, 3, 5, 7, 9, 18)},
}


def scaled_block(base):
    """A torchvision block with rmnet's learnable per-channel shortcut scale (what `rmnet train
    --sparsity` adds, src/models/residual_block.cpp): the shortcut reads relu(x * shortcut_scale)
    (then the projection, where there is one); the branch reads x."""
    class Scaled(base):
        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__(inplanes, planes, stride, downsample)
            self.shortcut_scale = nn.Parameter(torch.ones(inplanes))

        def forward(self, x):
            sc = torch.relu(x * self.shortcut_scale.view(1, -1, 1, 1))
            identity = self.downsample(sc) if self.downsample is not None else sc
            out = x
            names = ("conv1", "bn1", "relu", "conv2", "bn2") if not hasattr(self, "conv3") else \
                ("conv1", "bn1", "relu", "conv2", "bn2", "relu", "conv3", "bn3")
            for n in names:
                out = getattr(self, n)(out)
            return self.relu(out + identity)
    Scaled.__name__ = f"Scaled{base.__name__}"
    return Scaled


class ResNet(nn.Module):
    """rmnet's ResNet (include/rmnet/models/resnet.h) with torchvision's blocks and state-dict names:
    the CIFAR stem is a 3x3 stride-1 conv without max-pool (any input size, e.g. 28x28x1), the
    ImageNet stem torchvision's 7x7/2 conv + 3x3/2 max-pool; stride 2 in the first block of every
    stage but the first; projection shortcuts (1x1 conv + BN) where the shape changes."""

    def __init__(self, block, layers, widths, stem, stem_width, in_channels, num_classes, shortcut_scale=False):
        super().__init__()
        from torchvision.models.resnet import BasicBlock, Bottleneck
        blk = BasicBlock if block == "basic" else Bottleneck
        if shortcut_scale:
            blk = scaled_block(blk)
        imagenet = stem == "imagenet"
        self.conv1 = nn.Conv2d(in_channels, stem_width, 7 if imagenet else 3, 2 if imagenet else 1,
                               3 if imagenet else 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if imagenet else nn.Identity()
        planes_in = stem_width
        for s, (n, w) in enumerate(zip(layers, widths)):
            blocks = []
            for b in range(n):
                stride = 2 if (s > 0 and b == 0) else 1
                down = None
                if stride != 1 or planes_in != w * blk.expansion:
                    down = nn.Sequential(nn.Conv2d(planes_in, w * blk.expansion, 1, stride, bias=False),
                                         nn.BatchNorm2d(w * blk.expansion))
                blocks.append(blk(planes_in, w, stride, down))
                planes_in = w * blk.expansion
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.n_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes_in, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for s in range(self.n_stages):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def read_model_file(path):
    """(header dict, state dict) of an rmnet model file: a torch.save-compatible archive of
    {"rmnet": <JSON header>, "state": {name: tensor}} (include/rmnet/io/model_file.h)."""
    # LibTorch's pickle_save tags typed containers with torch.jit._pickle.restore_type_tag (it
    # only attaches the Dict[str, Tensor] type): allow that one global, keep weights_only.
    import torch.jit._pickle
    with torch.serialization.safe_globals([torch.jit._pickle.restore_type_tag]):
        blob = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or "rmnet" not in blob or "state" not in blob:
        raise ValueError(f"{path}: not an rmnet model file")
    header = json.loads(blob["rmnet"])
    if header.get("format") != "rmnet-model":
        raise ValueError(f"{path}: not an rmnet model file (format {header.get('format')!r})")
    return header, dict(blob["state"])


def rebuild_resnet(path):
    """The residual rmnet ResNet of a model file as a PyTorch module (eval mode) with its weights.
    Buffers rmnet keeps for the RM operation (per-block rm_in_mean/rm_in_var/rm_out_mean/
    rm_out_var) are dropped; anything else unexpected or missing is an error."""
    header, state = read_model_file(path)
    o = header["options"]
    arch = o["arch"]
    if header.get("family") != "resnet" or arch not in RESNET_TABLE:
        raise SystemExit(f"{path}: a {header.get('family')} ({arch}) network; this rebuild covers rmnet's "
                         f"residual ResNets without SE: {', '.join(RESNET_TABLE)}")
    if o.get("width_mult", 1.0) != 1.0:
        raise SystemExit(f"{path}: width_mult {o['width_mult']} is not supported by this rebuild")
    block, layers, widths, stem, stem_width = RESNET_TABLE[arch]
    model = ResNet(block, layers, widths, stem, stem_width, o["in_channels"], o["num_classes"],
                   bool(o.get("shortcut_scale")))
    rm_stats = ("rm_in_mean", "rm_in_var", "rm_out_mean", "rm_out_var")
    state = {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] not in rm_stats}
    own = model.state_dict()
    # torch.nn.BatchNorm2d has num_batches_tracked; LibTorch's too (same key), but be lenient
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise SystemExit(f"{path}: state does not match {arch}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    model.rmnet_header = header
    return model.eval()


# ------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict(model, x, batch=1000):
    model.eval()
    return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


@torch.no_grad()
def evaluate(model, x, y, batch=1000):
    """{"top1", "correct", "images", "loss"} of `model` on normalised images x, labels y."""
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(x), batch):
        out = model(x[i:i + batch])
        correct += int((out.argmax(1) == y[i:i + batch]).sum())
        loss += float(F.cross_entropy(out, y[i:i + batch], reduction="sum"))
    return {"top1": correct / len(x), "correct": correct, "images": len(x), "loss": loss / len(x)}


def rmnet_eval(binary, model_file, dataset="fashion-mnist", data=None, runtime="eager", image_size=None):
    """`rmnet eval --json` of a model file: the "model" record (top1 is a fraction)."""
    with tempfile.TemporaryDirectory() as d:
        out = pathlib.Path(d) / "eval.json"
        cmd = [str(binary), "eval", "--model", str(model_file), "--dataset", dataset, "--json", str(out),
               "--runtime", runtime]
        if data:
            cmd += ["--data", str(data)]
        if image_size:
            cmd += ["--image-size", str(image_size)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())["model"]


# --------------------------------------------------------------------------------------- training
def finetune(model, images_u8, labels, epochs, lr=0.01, momentum=0.9, weight_decay=5e-4, batch=128,
             seed=0, padding=2, flip=True, dataset="fashion-mnist", log=None, size=None):
    """rmnet's fine-tuning recipe: SGD (momentum, weight decay on every parameter), learning rate
    cosine from `lr` to 0 per iteration over `epochs` (fractions allowed), shuffled batches (the
    last partial batch kept), random crop with `padding` zero pixels + horizontal flip. Seeded."""
    if epochs <= 0:
        return model
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n = len(images_u8)
    per_epoch = math.ceil(n / batch)
    total = max(1, round(epochs * per_epoch))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    model.train()
    it, t0, running = 0, time.time(), 0.0
    while it < total:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            if it >= total:
                break
            for g in opt.param_groups:
                g["lr"] = 0.5 * lr * (1 + math.cos(math.pi * it / total))
            idx = order[i:i + batch]
            x = augment(images_u8[idx], gen, padding, flip, dataset, size)
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            l = loss.item()
            running = 0.98 * running + 0.02 * l if it else l
            it += 1
            if log and (it % 100 == 0 or it == total):
                log(f"    iter {it}/{total} loss {running:.4f} ({time.time() - t0:.0f} s)")
    return model.eval()


# ---------------------------------------------------------------------------------------- costs
def count_params(model):
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_conv_fc_macs(model, input_shape):
    """Multiply-accumulates per image of every Conv2d and Linear (what rmnet counts), at input_shape
    [1, C, H, W]."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += out.numel() // out.shape[0] * m.in_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        was = model.training
        model.eval()
        model(torch.zeros(input_shape))
        model.train(was)
    finally:
        for h in hs:
            h.remove()
    return total


def conv_widths(model):
    """{conv name: out channels} of every Conv2d (what pruning left)."""
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


# ------------------------------------------------------------------------------------- deployment
def export_onnx(model, path, input_shape, opset=17):
    """ONNX of `model` (eval) with a dynamic batch dimension (TorchScript exporter)."""
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(input_shape), str(path), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}},
                          opset_version=opset, dynamo=False)
    return path


# OpenVINO timing lives with the speed harnesses (scripts/speed_common.py); re-exported here.
sys.path.insert(0, str(ROOT / "scripts"))
from speed_common import (OPENVINO_F32, load_average_warning, nncf_int8_model, openvino_compile,  # noqa: E402,F401
                          openvino_predict, openvino_speed)


def versions(*names):
    import importlib.metadata as md
    out = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


# ------------------------------------------------------------------------------------------ output
def markdown_table(rows, columns):
    """rows: list of dicts; columns: list of (header, key or callable(row) -> str)."""
    def cell(r, k):
        v = k(r) if callable(k) else r.get(k)
        return "" if v is None else str(v)
    lines = ["| " + " | ".join(h for h, _ in columns) + " |",
             "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(cell(r, k) for _, k in columns) + " |" for r in rows]
    return "\n".join(lines)


def log(msg):
    print(msg, file=sys.stderr, flush=True)

# ----------------------------------------------------------------------------- the INT8 study's peers
THREADS = 2
FM_MEAN, FM_STD = NORMALIZATION["fashion-mnist"][0][0], NORMALIZATION["fashion-mnist"][1][0]


def sh(args, lock=None, capture=False):
    """Runs a command (under `flock LOCK` when given), printing it; stops the script on failure."""
    cmd = (["flock", lock] if lock else []) + [str(a) for a in args]
    print("+", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=capture, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout if capture else ''}{r.stderr if capture else ''}")
    return r.stdout if capture else ""


def fm_arrays(split):
    """(images float32 [N, 1, 28, 28] normalised as rmnet does, labels int64 [N]) of a Fashion-MNIST
    split ("train" or "t10k") as numpy arrays (the INT8 study's form)."""
    with gzip.open(f"{FASHION_MNIST_DIR}/{split}-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(f"{FASHION_MNIST_DIR}/{split}-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return ((x.astype(np.float32) / 255 - FM_MEAN) / FM_STD).astype(np.float32), y


def build_torchvision(arch, options):
    """The residual original of an rmnet network as a torchvision-named PyTorch module (the
    INT8 study's archs: resnet8, resnet50, mobilenet_v2_cifar)."""
    import torchvision
    cin, nc = options["in_channels"], options["num_classes"]
    if arch == "resnet8":
        return ResNet("basic", [1, 1, 1], [16, 32, 64], "cifar", 16, cin, nc)
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
    raise SystemExit(f"common.build_torchvision: no PyTorch model for '{arch}'")


def load_original(path):
    blob = torch.load(str(path), weights_only=False)
    header = json.loads(blob["rmnet"])
    model = build_torchvision(header["options"]["arch"], header["options"])
    state = {k: v for k, v in blob["state"].items() if k in model.state_dict()}
    missing = [k for k in model.state_dict() if k not in state]
    if missing:
        raise SystemExit(f"{path}: parameters missing for the PyTorch model: {missing[:5]}")
    model.load_state_dict(state)
    return model.eval()


# ---------------------------------------------------------------------------------------------- peers
def batches(x, n):
    return [x[i:i + n] for i in range(0, len(x), n)]


def predict_fn(fn, x, n=500):
    """Top-1 class per image of a callable (a module, a compiled module, an ONNX Runtime session
    wrapper) on numpy images, in batches of n."""
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

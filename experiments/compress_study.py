#!/usr/bin/env python3
"""The study of issue 22: `rmnet compress` against what a user would do instead, in one run.

For each network (--archs, each trained with and without --sparsity when --sparsity lists both):
  1. train it on the full Fashion-MNIST with `rmnet train` (the README demo's recipe: SGD 0.9, lr 0.1
     cosine, wd 5e-4, batch 128; --epochs), or reuse WORK/<net>/final.rmnet when it is there
     (an interrupted training resumes from its checkpoint);
  2. the user's alternatives, by experiments/prune_peers.py: the unpruned residual network and
     Torch-Pruning (DepGraph, BN-scale and group-L2 importance) at --fractions of its MACs, each
     fine-tuned --finetune-epochs with rmnet's recipe, in OpenVINO f32 and after NNCF INT8
     (`nncf.quantize`), top-1 and images/s at batch 32 and 1;
  3. `rmnet compress --target-macs F --finetune-epochs E --int8` at the same fractions (one round,
     the defaults: stream groups, executed MACs, keep-Dirac refit and fine-tuning, distillation from
     the converted network);
  4. every network timed at batch 32 and 1, interleaved, best of --timing-rounds: OpenVINO f32 (ONNX)
     and NNCF INT8 for the original and Torch-Pruning's, rmnet's fp32 network on the onednn runtime
     and its INT8 one on the int8 runtime (`rmnet bench`);
then per network and precision, at batch 32: rmnet's top-1 against Torch-Pruning's Pareto front
(the better of the two importances; linear between its points) at rmnet's measured images/s, and
whether an rmnet point is faster than the unpruned original in OpenVINO at the same precision while
losing at most 0.5 point. Writes WORK/study.json, a Markdown table (--table) and the
accuracy-against-images/s plot (--plot, one panel per precision and batch).

Timing: 2 threads, run on an otherwise idle machine (OpenVINO pins its threads; anything else
running cuts its speed). Training a network to convergence takes hours on 2 cores: reuse trained
models (they stay in WORK), or train elsewhere and copy final.rmnet in.

Run with the peers venv (openvino, nncf, torch-pruning; scripts/peers_env.sh prints its python):
  ~/.cache/rmnet/peers-venv/bin/python experiments/compress_study.py [--archs resnet20 resnet56]
      [--sparsity 0 1e-4] [--epochs 30] [--fractions 0.75 0.5 0.35] [--finetune-epochs 1]
      [--work runs/study] [--table docs/compress_study.md] [--plot docs/compress_study.png]
"""
import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent


def run(cmd, log=None):
    cmd = [str(c) for c in cmd]
    common.log("$ " + " ".join(cmd))
    if log is None:
        subprocess.run(cmd, check=True)
    else:
        with open(log, "a") as f:
            subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)


def net_name(arch, sparsity):
    return arch if sparsity == 0 else f"{arch}_s{sparsity:g}"


def train(a, arch, sparsity, folder):
    final = folder / "final.rmnet"
    if final.exists():
        return final
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / "checkpoint.ckpt"
    if ckpt.exists():
        run([a.rmnet, "train", "--resume", ckpt, "--workers", 2], folder / "train.log")
    else:
        cmd = [a.rmnet, "train", "--arch", arch, "--dataset", "fashion-mnist", "--epochs", a.epochs,
               "--batch-size", 128, "--lr", 0.1, "--weight-decay", 5e-4, "--schedule", "cosine",
               "--warmup-epochs", 0.2, "--workers", 2, "--seed", a.seed, "--out", folder]
        if a.image_size:
            cmd += ["--image-size", a.image_size]
        if sparsity > 0:
            cmd += ["--sparsity", sparsity]
        run(cmd, folder / "train.log")
    return final


def bench(a, model, batch, runtime, work, iters):
    out = work / "bench.json"
    run([a.rmnet, "bench", "--model", model, "--batch", batch, "--input-size", a.image_size or 28, "--iters", iters,
         "--warmup", max(5, iters // 10), "--runtime", runtime, "--json", out], work / "bench.log")
    return json.loads(out.read_text())["models"][0]["images_per_second"]


def compress(a, model, frac, folder):
    out = folder / f"compress_{frac:g}"
    report = out / "report.json"
    if not report.exists():
        run([a.rmnet, "compress", "--model", model, "--dataset", "fashion-mnist", "--target-macs", frac,
             "--finetune-epochs", a.finetune_epochs, "--int8", "--out", out] + a.compress_flags.split(),
            folder / "compress.log")
    r = json.loads(report.read_text())
    steps = {s["name"]: s for s in r["steps"]}
    last = [s for s in r["steps"] if s["name"].startswith("round")][-1]
    row = {"fraction": frac, "executed_macs": last["executed_macs"], "macs": last["macs"], "params": last["params"],
           "fp32": {"top1": last["top1"], "path": str(out / last["file"])},
           "int8": {"top1": steps["int8"]["top1"], "path": str(out / steps["int8"]["file"])}}
    if a.reeval:  # top-1 on the runtimes of this build (the report holds the build's that compressed)
        for prec in ("fp32", "int8"):
            js = out / f"eval_{prec}.json"
            run([a.rmnet, "eval", "--model", row[prec]["path"], "--dataset", "fashion-mnist", "--json", js]
                + (["--image-size", a.image_size] if a.image_size else []), folder / "eval.log")
            top1 = json.loads(js.read_text())["model"]["top1"]
            common.log(f"{row[prec]['path']}: top-1 {100 * row[prec]['top1']:.2f}% in its report, "
                       f"{100 * top1:.2f}% now")
            row[prec]["top1_report"] = row[prec]["top1"]
            row[prec]["top1"] = top1
    return row


def time_all(a, net, work):
    """Images/s of every network of `net` at every batch, interleaved: --timing-rounds rounds, each
    timing every network once per batch (OpenVINO in this process, rmnet by `rmnet bench`), the best
    round kept. Separate phases minutes apart differ by more than the networks do on this machine."""
    items = [(net["original"], "fp32", "ov", net["original"]["fp32"]["path"]),
             (net["original"], "int8", "ov", net["original"]["int8"]["path"])]
    for r in net["peers"]:
        items += [(r, "fp32", "ov", r["fp32"]["path"]), (r, "int8", "ov", r["int8"]["path"])]
    for r in net["rmnet"]:
        items += [(r, "fp32", "onednn", r["fp32"]["path"]), (r, "int8", "int8", r["int8"]["path"])]
    # as the timing starts: the 1-minute average still counts the training and pruning just done, so
    # wait (up to 2 minutes) for it to settle before judging the machine busy
    deadline = time.time() + 120
    load, warn = common.load_average_warning()
    while warn and time.time() < deadline:
        time.sleep(10)
        load, warn = common.load_average_warning()
    net["timing_load_average_1min"] = load
    if warn:
        common.log(warn)
        net["timing_warning"] = warn
    for rnd in range(a.timing_rounds):
        common.log(f"timing round {rnd + 1}/{a.timing_rounds}")
        for row, prec, runtime, path in items:
            for b in a.batches:
                if runtime == "ov":
                    side = a.image_size or 28
                    ips = common.openvino_speed(path, b, (1, side, side), rounds=1, seconds=a.round_seconds,
                                                warmup=0.2)["images_per_second"]
                else:
                    ips = bench(a, pathlib.Path(path), b, runtime, work, iters=max(20, int(a.round_seconds * 2000 / b)))
                key = f"b{b}"
                row[prec][key] = max(row[prec].get(key, 0.0), ips) if rnd > 0 else ips


def front(points):
    """Pareto front (images/s ascending, top-1 non-increasing) of [(images/s, top-1)]."""
    pts = sorted(points, key=lambda p: (-p[0], -p[1]))
    out, best = [], -1.0
    for s, t in pts:
        if t > best:
            out.append((s, t))
            best = t
    return sorted(out)


def at_speed(fr, speed):
    """Top-1 of a Pareto front at `speed` images/s: linear between its points, its best point's top-1
    below its slowest; beyond its fastest point (the peer has nothing that fast) its fastest point's
    top-1 (a margin there is a lower bound: rmnet is faster as well)."""
    if not fr:
        return None
    if speed > fr[-1][0]:
        return fr[-1][1]
    if speed <= fr[0][0]:
        return fr[0][1]
    for (s0, t0), (s1, t1) in zip(fr, fr[1:]):
        if s0 <= speed <= s1:
            return t0 + (t1 - t0) * (speed - s0) / (s1 - s0)
    return None


def analyse(net):
    """Per precision and batch: rmnet's margin over Torch-Pruning's front at rmnet's speed, and the
    rmnet points faster than the original at most 0.5 point below it."""
    out = {}
    for prec in ("fp32", "int8"):
        for b in net["batches"]:
            key = f"b{b}"
            tp = [(r[prec][key], r[prec]["top1"]) for r in net["peers"] if key in r[prec]]
            fr = front(tp)
            margins, beyond = [], []
            for r in net["rmnet"]:
                ref = at_speed(fr, r[prec][key])
                margins.append(None if ref is None else 100 * (r[prec]["top1"] - ref))
                beyond.append(bool(fr) and r[prec][key] > fr[-1][0])
            orig = net["original"][prec]
            better = [r["fraction"] for r in net["rmnet"]
                      if r[prec][key] > orig[key] and 100 * (orig["top1"] - r[prec]["top1"]) <= 0.5]
            out[f"{prec}_{key}"] = {"margins_points": margins, "faster_than_every_peer": beyond,
                                    "above_0.5": sum(m is not None and m >= 0.5 for m in margins),
                                    "faster_than_original_within_0.5": better}
    return out


def peers_rows(p):
    """prune_peers.py's JSON -> rows {label, fp32: {top1, b32, b1}, int8: {...}} and the original."""
    def row(r, label):
        q = r["int8"]
        return {"label": label, "fraction": r.get("fraction"), "macs_conv_fc": r.get("macs_conv_fc"),
                "fp32": {"top1": r.get("top1_after", r.get("top1")), "path": q["onnx"]},
                "int8": {"top1": q["top1"], "path": q["model"]}}
    base = row(p["baseline"], "original (residual)")
    return base, [row(r, f"TP {r['importance']}") for r in p["results"] if r.get("reached")]


def table(study):
    lines = []
    for name, net in study["networks"].items():
        lines.append(f"\n**{name}** (top-1 unpruned {100 * net['original']['fp32']['top1']:.2f}%)\n")
        bs = net["batches"]
        head = ["network", "target", "MACs"] + [f"{p} top-1 %" for p in ("f32", "INT8")] + \
               [f"{p} b{b} img/s" for p in ("f32", "INT8") for b in bs]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + " --- |" * len(head))
        rows = [net["original"]] + net["peers"] + [{**r, "label": "rmnet compress", "macs_conv_fc": r["executed_macs"]}
                                                  for r in net["rmnet"]]
        for r in rows:
            cells = [r["label"], "" if r.get("fraction") is None else f"{r['fraction']:.2f}",
                     "" if r.get("macs_conv_fc") is None else f"{r['macs_conv_fc'] / 1e6:.2f} M"]
            cells += ["" if r[p]["top1"] is None else f"{100 * r[p]['top1']:.2f}" for p in ("fp32", "int8")]
            cells += [f"{r[p][f'b{b}']:.0f}" if f"b{b}" in r[p] else "" for p in ("fp32", "int8") for b in bs]
            lines.append("| " + " | ".join(cells) + " |")
        for key, v in net["analysis"].items():
            m = ", ".join("n/a" if x is None else f"{x:+.2f}" + (" (faster than every Torch-Pruning point)" if b else "")
                          for x, b in zip(v["margins_points"], v["faster_than_every_peer"]))
            lines.append(f"\n{key}: rmnet minus Torch-Pruning's front at rmnet's speed (points): {m}; "
                         f"faster than the original within 0.5 point: {v['faster_than_original_within_0.5'] or 'none'}")
    return "\n".join(lines) + "\n"


def plot(study, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    nets = list(study["networks"].items())
    batches = nets[0][1]["batches"] if nets else [32]
    fig, axes = plt.subplots(len(nets), 2 * len(batches), figsize=(4.2 * 2 * len(batches), 3.6 * len(nets)),
                             squeeze=False)
    for i, (name, net) in enumerate(nets):
        for j, (prec, b) in enumerate((p, b) for p in ("fp32", "int8") for b in batches):
            ax, key = axes[i][j], f"b{b}"
            for label, marker in (("TP bn_scale", "s"), ("TP group_l2", "^")):
                pts = sorted((r[prec][key], 100 * r[prec]["top1"]) for r in net["peers"]
                             if r["label"] == label and key in r[prec])
                if pts:
                    ax.plot(*zip(*pts), marker=marker, label=f"{label} + OpenVINO")
            pts = sorted((r[prec][key], 100 * r[prec]["top1"]) for r in net["rmnet"])
            ax.plot(*zip(*pts), marker="o", color="C3", label="rmnet compress")
            o = net["original"][prec]
            if key in o:
                ax.plot([o[key]], [100 * o["top1"]], marker="*", markersize=12, color="k", linestyle="",
                        label="original, OpenVINO")
            ax.set_title(f"{name}: {'f32' if prec == 'fp32' else 'INT8'}, batch {b}", fontsize=9)
            ax.set_xlabel("images/s (2 threads)")
            ax.set_ylabel("top-1 %")
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["resnet20", "resnet56"])
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.0, 1e-4],
                    help="train each arch with each of these L1 sparsity weights (0: none)")
    ap.add_argument("--epochs", type=int, default=30, help="training epochs (a network not yet trained)")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.75, 0.5, 0.35],
                    help="targets, fractions of the residual network's MACs (conv + fc)")
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 1])
    ap.add_argument("--timing-rounds", type=int, default=3, help="interleaved timing rounds (best of)")
    ap.add_argument("--round-seconds", type=float, default=1.0, help="about how long one network is timed per round")
    ap.add_argument("--compress-flags", default="", help="extra rmnet compress flags (quoted)")
    ap.add_argument("--reeval", action="store_true",
                    help="evaluate rmnet's compressed networks (fp32 and INT8) again with this build, as after a "
                         "runtime change (the reports keep the top-1 of the build that compressed them)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=0,
                    help="train and evaluate at this side (Fashion-MNIST resized: `rmnet train --image-size`; "
                         "0: 28x28); e.g. 64 for --archs resnet18, torchvision's ImageNet stem")
    ap.add_argument("--rmnet", default=str(common.ROOT / "build" / "rmnet"))
    ap.add_argument("--work", default=str(common.ROOT / "runs" / "study"))
    ap.add_argument("--table")
    ap.add_argument("--plot")
    a = ap.parse_args()
    work = pathlib.Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    load, warn = common.load_average_warning()
    study = {"settings": {k: v for k, v in vars(a).items()}, "load_average_1min": load,
             "versions": common.versions("torch", "torch-pruning", "openvino", "nncf"), "networks": {}}
    if warn:
        common.log(warn)
        study["timing_warning"] = warn
    previous = work / "study.json"
    if previous.exists():  # networks of earlier runs stay in the table and the plot (a network run again replaces its entry)
        study["networks"] = json.loads(previous.read_text()).get("networks", {})
    for arch in a.archs:
        for sp in a.sparsity:
            name = net_name(arch, sp) + (f"_{a.image_size}px" if a.image_size else "")
            folder = work / name
            model = train(a, arch, sp, folder)
            peers_json = folder / "peers.json"
            if not peers_json.exists():
                run([sys.executable, HERE / "prune_peers.py", model, "--measure", "macs_conv_fc", "--fractions",
                     *a.fractions, "--epochs", a.finetune_epochs, "--int8", "--no-timing", "--save",
                     folder / "peers_models", "--rmnet", a.rmnet, "--json", peers_json, "--image-size", a.image_size],
                    folder / "peers.log")
            original, peers = peers_rows(json.loads(peers_json.read_text()))
            rows = [compress(a, model, f, folder) for f in a.fractions]
            net = {"model": str(model), "batches": a.batches, "original": original, "peers": peers, "rmnet": rows}
            time_all(a, net, folder)
            net["analysis"] = analyse(net)
            study["networks"][name] = net
            (work / "study.json").write_text(json.dumps(study, indent=2) + "\n")
    text = table(study)
    print(text)
    if a.table:
        pathlib.Path(a.table).write_text(text)
    if a.plot:
        plot(study, a.plot)
        common.log(f"wrote {a.plot}")


if __name__ == "__main__":
    main()

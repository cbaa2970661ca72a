"""The peer of rmnet's pruning of the plain (RM) form: Torch-Pruning (DepGraph, residual-aware) on
the *residual* network, at given fractions of the residual network's MACs (project issue 22).

  1. Rebuild the residual ResNet of an rmnet model file in PyTorch (torchvision's module names;
     the file is torch.load-able) and check it against `rmnet eval`: the same top-1 and the same
     predicted class on each of the 10,000 Fashion-MNIST test images.
  2. Torch-Pruning (BasePruner, global_pruning=True, the classifier fc ignored) with BN-scale and
     group-L2 importance, stepped finely (--steps iterative steps to a 100% ratio, Torch-Pruning's
     own "progressive pruning") until the MACs at 1x1x28x28 (tp.utils.count_ops_and_params) are
     at or below each target: the first step that reaches it.
  3. Top-1 before and after --epochs of fine-tuning (rmnet's recipe: SGD momentum 0.9, lr 0.01
     cosine per iteration, weight decay 5e-4, batch 128, random crop with 2-pixel zero padding +
     horizontal flip, rmnet's normalisation; seeded).
  4. OpenVINO f32 images/s (ONNX opset 17, 2 threads, 1 stream, LATENCY) at batch 32 and 1, best
     of --rounds, for the unpruned network and each pruned one (skip with --no-timing; run it on an
     idle machine).
  5. With --int8: NNCF INT8 of each (nncf.quantize of its ONNX in OpenVINO, --calib-images training
     images): top-1 on the test images in OpenVINO and images/s like 4.

Run with the peers venv (scripts/peers_env.sh prints its python):
  ~/.cache/rmnet/peers-venv/bin/python experiments/prune_peers.py runs/demo/final.rmnet \\
      [--fractions 0.75 0.5 0.35] [--epochs 1] [--json out.json] [--no-timing]
Prints a markdown table on stdout, progress on stderr. Pruning is deterministic, so the networks
(hence their timings) do not depend on --epochs: time them later on an idle machine with
--epochs 0, and fine-tune with --no-timing while the machine is busy."""
import argparse
import copy
import json
import pathlib
import sys
import tempfile
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

IMPORTANCES = {
    "bn_scale": "tp.importance.BNScaleImportance() (mean |gamma| over the group's BatchNorms)",
    "group_l2": "tp.importance.GroupMagnitudeImportance(p=2) (group L2 over convs, BNs, fc)",
}


def make_importance(tp, name):
    if name == "bn_scale":
        return tp.importance.BNScaleImportance()
    if name == "group_l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    raise ValueError(name)


def tp_macs(tp, model, shape):
    macs, params = tp.utils.count_ops_and_params(model, torch.zeros(shape))
    return int(macs), int(params)


def costs(tp, model, shape):
    macs, params = tp_macs(tp, model, shape)
    return {"macs": macs, "macs_conv_fc": common.count_conv_fc_macs(model, shape), "params": params}


def measure_macs(tp, model, shape, measure):
    if measure == "macs":
        return tp_macs(tp, model, shape)[0]
    return common.count_conv_fc_macs(model, shape)


def prune_trajectory(tp, base, importance, targets, shape, steps, measure):
    """One Torch-Pruning run, stepped until each target (descending MACs) is reached; a copy of the
    network at the first step at or below each target. Returns {target: (model or None, step,
    MACs of the step before)}: the step before is still above the target."""
    model = copy.deepcopy(base).eval()
    # rmnet's per-channel shortcut scales (--sparsity): pruned along their only dimension with the
    # block input's channels
    scales = [(m.shortcut_scale, 0) for m in model.modules() if isinstance(getattr(m, "shortcut_scale", None),
                                                                          torch.nn.Parameter)]
    pruner = tp.pruner.BasePruner(
        model, torch.zeros(shape), importance=make_importance(tp, importance), global_pruning=True,
        pruning_ratio=1.0, iterative_steps=steps, ignored_layers=[model.fc], unwrapped_parameters=scales or None)
    out, pending = {}, sorted(targets, reverse=True)
    prev = measure_macs(tp, model, shape, measure)
    while pending:
        if pruner.current_step >= steps:
            out.update({t: (None, pruner.current_step, prev) for t in pending})
            break
        pruner.step()
        macs = measure_macs(tp, model, shape, measure)
        while pending and macs <= pending[0]:
            out[pending.pop(0)] = (copy.deepcopy(model).eval(), pruner.current_step, prev)
        prev = macs
    return out


def verify(model, binary, model_file, x_test, y_test, data, image_size=0):
    """Top-1 and per-image predictions of the rebuild against `rmnet eval` (eager runtime)."""
    ours = common.evaluate(model, x_test, y_test)
    preds = common.predict(model, x_test)
    with tempfile.TemporaryDirectory() as d:
        pfile, jfile = pathlib.Path(d) / "pred.txt", pathlib.Path(d) / "eval.json"
        cmd = [str(binary), "eval", "--model", str(model_file), "--dataset", "fashion-mnist", "--json",
               str(jfile), "--predictions", str(pfile), "--runtime", "eager"]
        if data != common.FASHION_MNIST_DIR:
            cmd += ["--data", str(data)]
        if image_size:
            cmd += ["--image-size", str(image_size)]
        import subprocess
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        theirs = json.loads(jfile.read_text())["model"]
        their_preds = torch.tensor([int(s) for s in pfile.read_text().split()])
    agree = int((their_preds == preds).sum())
    return {"rmnet_top1": theirs["top1"], "rmnet_correct": round(theirs["top1"] * len(y_test)),
            "pytorch_top1": ours["top1"], "pytorch_correct": ours["correct"],
            "prediction_agreement": agree, "images": len(y_test),
            "ok": round(theirs["top1"] * len(y_test)) == ours["correct"] and agree == len(y_test)}


def timing(model, shape_chw, batches, rounds, seconds, work, name, x_check):
    onnx_path = common.export_onnx(model, pathlib.Path(work) / f"{name}.onnx", (1, *shape_chw))
    out = {}
    for b in batches:
        r = common.openvino_speed(onnx_path, b, shape_chw, rounds=rounds, seconds=seconds, check=(model, x_check))
        out[f"b{b}"] = r
        common.log(f"    OpenVINO f32 batch {b}: {r['images_per_second']:.0f} images/s "
                   f"(|OpenVINO - PyTorch| <= {r['max_abs_diff']:.2e})")
    return out


def int8(model, shape_chw, calib, x_test, y_test, batches, rounds, seconds, work, name, timed=True, save=None):
    """NNCF INT8 of the network (its ONNX in OpenVINO, `nncf.quantize` on the calibration images):
    top-1 on the test images in OpenVINO and, when timed, images/s per batch; with `save` (a folder)
    the f32 ONNX and the INT8 OpenVINO model are kept there (paths in the result)."""
    folder = pathlib.Path(save) if save else pathlib.Path(work)
    onnx_path = common.export_onnx(model, folder / f"{name}.onnx", (1, *shape_chw))
    q = common.nncf_int8_model(onnx_path, shape_chw, calib)
    preds = common.openvino_predict(q, x_test, config=common.OPENVINO_F32)
    out = {"top1": float((torch.from_numpy(preds) == torch.as_tensor(y_test)).float().mean())}
    if save:
        import openvino as ov
        ov.save_model(q, str(folder / f"{name}_int8.xml"))
        out["onnx"], out["model"] = str(onnx_path), str(folder / f"{name}_int8.xml")
    common.log(f"    NNCF INT8 in OpenVINO: top-1 {100 * out['top1']:.2f}%")
    if timed:
        for b in batches:
            r = common.openvino_speed(q, b, shape_chw, rounds=rounds, seconds=seconds)
            out[f"b{b}"] = r
            common.log(f"    OpenVINO NNCF INT8 batch {b}: {r['images_per_second']:.0f} images/s")
    return out


def fmt_count(n):
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="rmnet residual model file (e.g. runs/demo/final.rmnet)")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.75, 0.50, 0.35],
                    help="target MACs as fractions of the residual network's (default 0.75 0.5 0.35)")
    ap.add_argument("--target-macs", type=float, nargs="+",
                    help="absolute MAC targets instead of --fractions (e.g. rmnet's pruned plain networks')")
    ap.add_argument("--measure", choices=["macs", "macs_conv_fc"], default="macs",
                    help="what the targets count: tp.utils.count_ops_and_params's MACs (default; conv, linear, "
                         "BN, ReLU, pooling) or conv+linear multiply-accumulates only (rmnet's count)")
    ap.add_argument("--importance", nargs="+", choices=list(IMPORTANCES), default=list(IMPORTANCES))
    ap.add_argument("--steps", type=int, default=400,
                    help="Torch-Pruning iterative_steps to a 100%% channel ratio (granularity of the search)")
    ap.add_argument("--epochs", type=float, default=1, help="fine-tuning epochs (0: none)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads (pruning, evaluation, fine-tuning)")
    ap.add_argument("--data", default=common.FASHION_MNIST_DIR, help="Fashion-MNIST IDX folder")
    ap.add_argument("--image-size", type=int, default=0,
                    help="resize the images to this side after the augmentation, as `rmnet train --image-size` "
                         "(0: their own 28x28)")
    ap.add_argument("--rmnet", default=str(common.ROOT / "build" / "rmnet"),
                    help="rmnet binary for the rebuild check (default build/rmnet)")
    ap.add_argument("--no-verify", action="store_true", help="skip the check against `rmnet eval`")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--rounds", type=int, default=5, help="timing rounds (best of)")
    ap.add_argument("--round-seconds", type=float, default=1.0, help="length of one timing round")
    ap.add_argument("--timing-batches", type=int, nargs="+", default=[32, 1])
    ap.add_argument("--int8", action="store_true",
                    help="also NNCF INT8 (nncf.quantize in OpenVINO) of the residual and of every pruned network "
                         "after fine-tuning: its top-1 and (unless --no-timing) images/s")
    ap.add_argument("--calib-images", type=int, default=256,
                    help="--int8 calibration images (training set, rmnet's test transform, seeded choice)")
    ap.add_argument("--save", help="with --int8: keep each network's f32 ONNX and NNCF INT8 OpenVINO model "
                                   "in this folder (to time them later, e.g. interleaved with other runtimes)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    if a.save:
        pathlib.Path(a.save).mkdir(parents=True, exist_ok=True)

    import torch_pruning as tp
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    common.log(f"rebuilding {a.model}")
    base = common.rebuild_resnet(a.model)
    header = base.rmnet_header
    cin = header["options"]["in_channels"]
    x_test_u8, y_test = common.read_mnist(a.data, train=False)
    side = a.image_size or x_test_u8.shape[2]
    shape_chw = (cin, side, side)
    shape = (1, *shape_chw)
    x_test = common.resize(common.normalize(x_test_u8), a.image_size)

    report = {"model": str(a.model), "arch": header["options"]["arch"], "options": header["options"],
              "versions": common.versions("torch", "torch-pruning", "openvino", "onnx", "numpy"),
              "settings": {k: v for k, v in vars(a).items() if k not in ("model", "json")}}
    binary = pathlib.Path(a.rmnet)
    if a.no_verify:
        report["verify"] = None
    elif not binary.exists():
        common.log(f"warning: no rmnet binary at {binary}: the rebuild is not checked against `rmnet eval`")
        report["verify"] = None
    else:
        v = verify(base, binary, a.model, x_test, y_test, a.data, a.image_size)
        report["verify"] = v
        common.log(f"rebuild check: rmnet eval top-1 {100 * v['rmnet_top1']:.2f}% ({v['rmnet_correct']}), "
                   f"PyTorch {100 * v['pytorch_top1']:.2f}% ({v['pytorch_correct']}), same prediction on "
                   f"{v['prediction_agreement']}/{v['images']} images")
        if not v["ok"]:
            raise SystemExit("prune_peers: the PyTorch rebuild does not match rmnet eval")

    if not a.no_timing:
        load, warn = common.load_average_warning()
        report["load_average_1min"] = load
        if warn:
            common.log(warn)
            report["timing_warning"] = warn
    work = tempfile.TemporaryDirectory()

    c0 = costs(tp, base, shape)
    ev0 = common.evaluate(base, x_test, y_test)
    baseline = {**c0, "top1": ev0["top1"]}
    common.log(f"residual {header['options']['arch']}: {c0['macs']} MACs (Torch-Pruning count; conv+fc "
               f"{c0['macs_conv_fc']}), {c0['params']} params, top-1 {100 * ev0['top1']:.2f}%")
    if not a.no_timing:
        baseline["timing"] = timing(base, shape_chw, a.timing_batches, a.rounds, a.round_seconds, work.name,
                                    "residual", x_test)
    calib = None
    if a.int8:
        xtr, _ = common.read_mnist(a.data, train=True)
        pick = torch.randperm(xtr.shape[0], generator=torch.Generator().manual_seed(a.seed))[:a.calib_images]
        calib = common.resize(common.normalize(xtr[pick]), a.image_size)
        baseline["int8"] = int8(base, shape_chw, calib, x_test, y_test, a.timing_batches, a.rounds,
                                a.round_seconds, work.name, "residual", not a.no_timing, a.save)
    report["baseline"] = baseline

    if a.target_macs:
        targets = [(None, float(t)) for t in a.target_macs]
    else:
        targets = [(f, f * c0[a.measure]) for f in a.fractions]
    x_train_u8 = y_train = None
    if a.epochs > 0:
        x_train_u8, y_train = common.read_mnist(a.data, train=True)

    results = []
    for imp in a.importance:
        common.log(f"Torch-Pruning, {IMPORTANCES[imp]}")
        t0 = time.time()
        by_target = prune_trajectory(tp, base, imp, [t for _, t in targets], shape, a.steps, a.measure)
        common.log(f"  pruning trajectory: {time.time() - t0:.1f} s")
        for frac, target in targets:
            model, step, prev = by_target[target]
            row = {"importance": imp, "fraction": frac, "target": target, "measure": a.measure}
            if model is None:
                common.log(f"  target {target:.0f}: not reached in {a.steps} steps")
                results.append({**row, "reached": False})
                continue
            c = costs(tp, model, shape)
            row.update(c, reached=True, step=step, previous_step_macs=prev, fraction_of_macs=c["macs"] / c0["macs"],
                       fraction_of_macs_conv_fc=c["macs_conv_fc"] / c0["macs_conv_fc"],
                       widths=common.conv_widths(model))
            row["top1_before"] = common.evaluate(model, x_test, y_test)["top1"]
            common.log(f"  target {target:.0f}{'' if frac is None else f' ({frac})'}: step {step}, {c['macs']} MACs "
                       f"({100 * row['fraction_of_macs']:.1f}%), conv+fc {c['macs_conv_fc']}, {c['params']} params, "
                       f"top-1 before fine-tuning {100 * row['top1_before']:.2f}% (the step before: {prev} {a.measure})")
            if a.epochs > 0:
                t1 = time.time()
                common.finetune(model, x_train_u8, y_train, a.epochs, lr=a.lr, weight_decay=a.weight_decay,
                                batch=a.batch_size, seed=a.seed, log=common.log, size=a.image_size)
                row["finetune_seconds"] = time.time() - t1
                row["top1_after"] = common.evaluate(model, x_test, y_test)["top1"]
                common.log(f"    after {a.epochs:g} epoch(s): top-1 {100 * row['top1_after']:.2f}% "
                           f"({row['finetune_seconds']:.0f} s)")
            if not a.no_timing:
                row["timing"] = timing(model, shape_chw, a.timing_batches, a.rounds, a.round_seconds, work.name,
                                       f"{imp}_{len(results)}", x_test)
            if a.int8:
                row["int8"] = int8(model, shape_chw, calib, x_test, y_test, a.timing_batches, a.rounds,
                                   a.round_seconds, work.name, f"{imp}_{len(results)}", not a.no_timing, a.save)
            results.append(row)
    report["results"] = results
    work.cleanup()

    pct = lambda v: None if v is None else f"{100 * v:.2f}"  # noqa: E731
    ips = lambda b: (lambda r: None if "timing" not in r else f"{r['timing'][f'b{b}']['images_per_second']:.0f}")  # noqa: E731
    cols = [("network", lambda r: r.get("label") or f"TP {r['importance']}"),
            ("target", lambda r: "" if r.get("target") is None else
             (f"{r['fraction']:.2f}" if r.get("fraction") is not None else fmt_count(r["target"]))),
            ("MACs (TP)", lambda r: fmt_count(r["macs"]) if "macs" in r else "not reached"),
            ("of residual", lambda r: f"{r['macs'] / c0['macs']:.3f}" if "macs" in r else None),
            ("MACs conv+fc", lambda r: fmt_count(r["macs_conv_fc"]) if "macs_conv_fc" in r else None),
            ("params", lambda r: fmt_count(r["params"]) if "params" in r else None),
            ("top-1 before FT %", lambda r: pct(r.get("top1_before", r.get("top1"))))]
    if a.epochs > 0:
        cols += [(f"top-1 after {a.epochs:g} ep %", lambda r: pct(r.get("top1_after")))]
    if not a.no_timing:
        cols += [(f"OV f32 b{b} img/s", ips(b)) for b in a.timing_batches]
    if a.int8:
        cols += [("NNCF INT8 top-1 %", lambda r: pct(r["int8"]["top1"]) if "int8" in r else None)]
        if not a.no_timing:
            cols += [(f"OV INT8 b{b} img/s", (lambda b: lambda r: f"{r['int8'][f'b{b}']['images_per_second']:.0f}"
                      if "int8" in r else None)(b)) for b in a.timing_batches]
    rows = [{"label": f"residual {report['arch']}", **baseline}] + results
    table = common.markdown_table(rows, cols)
    report["table"] = table
    print(table)
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(report, indent=2) + "\n")
        common.log(f"wrote {a.json}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Where OpenVINO gains on the same network (issue 23, deliverable 2): per-layer profiles of rmnet's
runtime and of OpenVINO on the same plain network, side by side.

  rmnet     `rmnet bench --profile` (each step's mean time) and, in a second run under
            ONEDNN_VERBOSE=1, every oneDNN primitive it executed: kernel (e.g. brg_conv_fwd:avx512_core_vnni,
            jit_int8:..., ref), layouts, post-ops, time; summed by primitive and kernel.
  OpenVINO  the same ONNX (rmnet's own export of the plain network; INT8: NNCF of it, calibrated on the
            images of --calib) compiled with PERF_COUNT, the precision said aloud, 2 threads, 1 stream,
            latency mode; get_profiling_info() per executed node (type, kernel, time), summed the same way.
Convolutions are matched in execution order (the k-th conv of each), with their kernels and times.

    $(scripts/peers_env.sh | tail -1) scripts/profile_vs_openvino.py --rmnet build/rmnet \\
        --model WORK/resnet18_rm.rmnet --onnx WORK/resnet18_rm.onnx --precision int8 \\
        --quantized WORK/resnet18_q32.rmnet --calib WORK/data_32 --size 32 --batch 32 --out FILE.md

(WORK: a scripts/compare_speed.py --work folder holds these files.) Run it on an idle machine.
"""
import argparse
import collections
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import speed_common as sc  # noqa: E402


def rmnet_profile(a, model, runtime, dtype, tmp):
    j = pathlib.Path(tmp) / "bench.json"
    cmd = [a.rmnet, "--threads", a.threads, "bench", "--model", model, "--runtime", runtime, "--dtype", dtype,
           "--batch", a.batch, "--input-size", a.size, "--warmup", a.warmup, "--iters", a.iters, "--profile",
           "--json", j]
    sc.run(cmd)
    m = json.loads(j.read_text())["models"][0]
    # one forward under ONEDNN_VERBOSE: the primitives, kernels and their times. The first forwards
    # also reorder weights; the primitives of one forward are what a run of one more forward adds.
    env = dict(os.environ, ONEDNN_VERBOSE="1")

    def execs(iters):
        vcmd = [a.rmnet, "--threads", a.threads, "bench", "--model", model, "--runtime", runtime, "--dtype", dtype,
                "--batch", a.batch, "--input-size", a.size, "--warmup", 3, "--iters", iters]
        r = subprocess.run(list(map(str, vcmd)), capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise SystemExit(f"failed under ONEDNN_VERBOSE: {' '.join(map(str, vcmd))}\n{r.stderr[-2000:]}")
        out = r.stdout
        return [ln.split(",") for ln in out.splitlines() if ln.startswith("onednn_verbose") and ",exec," in ln]

    one, two = execs(1), execs(2)
    per_forward = max(len(two) - len(one), 0)
    last = two[-per_forward:] if per_forward else []
    if not per_forward:
        print("warning: no oneDNN primitives seen under ONEDNN_VERBOSE (a LibTorch without verbose support?)")
    prims = []
    for f in last:
        # onednn_verbose,[v1,]primitive,exec,cpu,KIND,IMPL,PROP,MEMORY,ATTR,ALG,SHAPE,TIME
        i = f.index("exec")
        kind, impl = f[i + 2], f[i + 3]
        mem = f[i + 5]
        src = mem.split()[0] if mem else ""
        prims.append({"kind": kind, "impl": impl, "src": src, "attr": f[i + 6], "shape": f[-2], "ms": float(f[-1])})
    return m, prims


def openvino_profile(a, calib, channels):
    """OpenVINO on the same ONNX: the wall time per forward (compiled without PERF_COUNT), and per
    executed node the mean time of a second compilation with PERF_COUNT (the CPU plugin's counters
    average every inference since compilation, warm-up included, in whole microseconds; nodes fused
    into others report nothing)."""
    import openvino as ov

    core = ov.Core()
    m = core.read_model(str(a.onnx))
    shape = [a.batch, channels, a.size, a.size]
    m.reshape({m.inputs[0].any_name: shape})
    if a.precision == "int8":
        import logging

        import nncf
        n = a.batch
        items = [calib[i:i + n].numpy() for i in range(0, calib.shape[0] - n + 1, n)] or [calib[:n].numpy()]
        logging.getLogger().setLevel(logging.ERROR)
        m = nncf.quantize(m, nncf.Dataset(items), subset_size=len(items) * n)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    cfg = sc.openvino_config("bf16" if a.precision == "bf16" else "f32", a.threads)
    compiled = core.compile_model(m, "CPU", cfg)
    req = compiled.create_infer_request()
    for _ in range(a.warmup):
        req.infer({0: x})
    t0 = time.perf_counter()
    for _ in range(a.iters):
        req.infer({0: x})
    wall = (time.perf_counter() - t0) / a.iters * 1e3
    del req, compiled
    compiled = core.compile_model(m, "CPU", dict(cfg, PERF_COUNT=True))
    req = compiled.create_infer_request()
    for _ in range(a.iters * 3):  # the one warm-up forward weighs 1/(3 iters) in the averages
        req.infer({0: x})
    nodes = []
    for p in req.get_profiling_info():
        if p.status == ov.ProfilingInfo.Status.EXECUTED:
            nodes.append({"name": p.node_name, "type": p.node_type, "impl": p.exec_type,
                          "ms": p.real_time.total_seconds() * 1e3})
    return nodes, wall


def summary(rows, key, total_ms):
    by = collections.OrderedDict()
    for r in rows:
        k = key(r)
        n, ms = by.get(k, (0, 0.0))
        by[k] = (n + 1, ms + r["ms"])
    lines = ["| what | count | ms | share |", "|---|---|---|---|"]
    for k, (n, ms) in sorted(by.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"| {k} | {n} | {ms:.3f} | {100 * ms / max(total_ms, 1e-9):.1f}% |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rmnet", required=True)
    ap.add_argument("--model", required=True, help="rmnet's plain network (float)")
    ap.add_argument("--onnx", required=True, help="rmnet's ONNX export of the same plain network")
    ap.add_argument("--quantized", help="int8: rmnet's quantized network (rmnet quantize of --model)")
    ap.add_argument("--calib", help="int8: a folder data set (compare_speed's data_SIZE) to calibrate NNCF on")
    ap.add_argument("--precision", choices=["f32", "bf16", "int8"], default="f32")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels", type=int, default=3, help="input channels (without --calib)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--out", help="write the report (markdown) here too")
    a = ap.parse_args()
    if a.precision == "int8" and not (a.quantized and a.calib):
        ap.error("--precision int8 needs --quantized and --calib")
    load, warning = sc.load_average_warning()
    if warning:
        print(warning)
    calib = sc.load_split(pathlib.Path(a.calib), "train", a.size) if a.calib else None
    channels = calib.shape[1] if calib is not None else a.channels

    with tempfile.TemporaryDirectory() as tmp:
        if a.precision == "int8":
            m, prims = rmnet_profile(a, a.quantized, "int8", "fp32", tmp)
        else:
            m, prims = rmnet_profile(a, a.model, "onednn", "bf16" if a.precision == "bf16" else "fp32", tmp)
    nodes, ov_wall = openvino_profile(a, calib, channels)

    steps = m.get("steps", [])
    r_total = sum(s["ms"] for s in steps)
    r_wall = 1e3 * a.batch / m["images_per_second"]
    o_total = sum(n["ms"] for n in nodes)
    ran = a.quantized if a.precision == "int8" else a.model
    rep = [f"# rmnet vs OpenVINO, per layer: {pathlib.Path(ran).name}, {a.precision}, "
           f"{a.size}x{a.size} batch {a.batch}, {a.threads} threads",
           "",
           f"{time.strftime('%Y-%m-%d %H:%M')}, 1-minute load at start {load:.2f}. Wall time per forward: "
           f"rmnet {r_wall:.3f} ms ({m['images_per_second']:.1f} images/s, {m['runtime']} runtime), "
           f"OpenVINO {ov_wall:.3f} ms ({1e3 * a.batch / ov_wall:.1f} images/s). Sum of per-step times: "
           f"rmnet {r_total:.3f} ms, OpenVINO {o_total:.3f} ms (its counters: whole microseconds).",
           "",
           "## Convolutions in execution order", "",
           "| # | rmnet step | rmnet ms | OpenVINO node | kernel | OpenVINO ms | rmnet / OV time |", "|---|---|---|---|---|---|---|"]
    r_convs = [s for s in steps if s["name"].startswith(("conv", "qconv"))]
    o_convs = [n for n in nodes if n["type"] in ("Convolution", "GroupConvolution")]
    for k in range(max(len(r_convs), len(o_convs))):
        rs = r_convs[k] if k < len(r_convs) else None
        on = o_convs[k] if k < len(o_convs) else None
        rat = f"{rs['ms'] / on['ms']:.2f}" if rs and on and on["ms"] > 0 else "-"
        rep.append(f"| {k} | {rs['name'] if rs else '-'} | {rs['ms']:.3f} | " if rs else f"| {k} | - | - | ")
        rep[-1] += (f"{on['name']} | {on['impl']} | {on['ms']:.3f} | {rat} |" if on else "- | - | - | - |")
    r_conv_ms = sum(s["ms"] for s in r_convs)
    o_conv_ms = sum(n["ms"] for n in o_convs)
    rep += ["", f"Convolutions: rmnet {r_conv_ms:.3f} ms, OpenVINO {o_conv_ms:.3f} ms; everything else: rmnet "
            f"{r_total - r_conv_ms:.3f} ms, OpenVINO {o_total - o_conv_ms:.3f} ms.", "",
            "## rmnet: steps other than convolutions", "", "| step | ms |", "|---|---|"]
    for s in steps:
        if not s["name"].startswith(("conv", "qconv")):
            rep.append(f"| {s['name']} | {s['ms']:.3f} |")
    p_total = sum(p["ms"] for p in prims)
    rep += ["", f"## rmnet: oneDNN primitives of one forward (ONEDNN_VERBOSE; {len(prims)} calls, {p_total:.3f} ms)", ""]
    rep += summary(prims, lambda p: f"{p['kind']} {p['impl']} {p['src']}", p_total)
    rep += ["", f"## OpenVINO: executed nodes by type and kernel (PERF_COUNT; {len(nodes)} nodes)", ""]
    rep += summary(nodes, lambda n: f"{n['type']} {n['impl']}", o_total)
    text = "\n".join(rep) + "\n"
    print(text)
    if a.out:
        pathlib.Path(a.out).write_text(text)


if __name__ == "__main__":
    main()

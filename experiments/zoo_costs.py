#!/usr/bin/env python3
"""Parameters and MACs of the model zoo, residual and converted (BN fused), from the rmnet CLI
(`rmnet init`, `rmnet convert`, `rmnet info`), as a Markdown table next to the paper's numbers.

Usage: experiments/zoo_costs.py RMNET_BINARY [--work /tmp/zoo] [--out docs/zoo_costs.md]
"""
import argparse
import pathlib
import re
import subprocess

# arch, classes, input size, convert flags, the paper's (params M, FLOPs G) for the row, source
MODELS = [
    ("rmnet26x3_32", 10, 32, [], "8.8 / 0.51 G", "Table 1, CIFAR-10"),
    ("rmnet26x3_32", 100, 32, [], "8.9 / 0.51 G", "Table 1, CIFAR-100"),
    ("rmnet41x4_8", 1000, 224, [], "11.2 / 1.9 G", "Table 1"),
    ("rmnet41x5_16", 1000, 224, [], "23.9 / 3.79 G", "Table 1"),
    ("rmnet50x5_32", 1000, 224, [], "39.6 / 6.88 G", "Table 1"),
    ("rmnet50x6_32", 1000, 224, [], "47.6 / 8.26 G", "Table 1"),
    ("rmnet101x6_16", 1000, 224, [], "59.45 / 11.11 G", "Table 1"),
    ("rmnet152x6_32", 1000, 224, [], "126.92 / 25.32 G", "Table 1"),
    ("resnet34_cifar", 10, 32, [], "21.2 / 1.16 G", "Table 1, ResNet 34"),
    ("repvgg_a0", 1000, 224, [], "8.30 / 1.36 G", "RepVGG paper (deploy)"),
    ("repvgg_b0", 1000, 224, [], "14.33 / 3.06 G", "RepVGG paper (deploy)"),
    ("mobilenet_v2_v1_cifar", 10, 32, ["--fuse-pointwise", "always"], "83.4 M -> 47.1 M FLOPs", "Table 2"),
    ("mobilenet_v1_cifar", 10, 32, [], "47.1 M FLOPs", "Table 2"),
]


def cost(rmnet, model, size):
    out = subprocess.run([rmnet, "info", "--model", model, "--input-size", str(size), "--no-layers"],
                         check=True, capture_output=True, text=True).stdout
    m = re.search(r"parameters: (\d+) .*MACs per image at \d+x\d+: (\d+)", out)
    return int(m.group(1)), int(m.group(2))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rmnet")
    ap.add_argument("--work", default="/tmp/rmnet-zoo")
    ap.add_argument("--out", default="zoo_costs.md")
    a = ap.parse_args()
    work = pathlib.Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    lines = ["| model | classes | input | residual params | residual MACs | converted params | converted MACs |"
             " paper (params M / FLOPs) |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for arch, classes, size, flags, paper, source in MODELS:
        res, plain = work / f"{arch}_{classes}.rmnet", work / f"{arch}_{classes}_plain.rmnet"
        subprocess.run([a.rmnet, "init", "--arch", arch, "--num-classes", str(classes), "--track-stats",
                        "--random-bn", "--out", res], check=True, capture_output=True)
        subprocess.run([a.rmnet, "convert", "--model", res, "--out", plain, "--verify-size", "32", *flags],
                       check=True, capture_output=True)
        rp, rf = cost(a.rmnet, res, size)
        pp, pf = cost(a.rmnet, plain, size)
        lines.append(f"| {arch} | {classes} | {size} | {rp/1e6:.3f} M | {rf/1e9:.3f} G | {pp/1e6:.3f} M | "
                     f"{pf/1e9:.3f} G | {paper} ({source}) |")
        print(lines[-1], flush=True)
        res.unlink()
        plain.unlink()
    pathlib.Path(a.out).write_text("\n".join(lines) + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()

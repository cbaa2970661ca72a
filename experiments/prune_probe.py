#!/usr/bin/env python3
"""Why does slimming the plain (RM) form lose more accuracy than the residual baseline? A probe.

Loads a plain BN-kept network exported with `rmnet export --pth` (FILE.pth + FILE.pth.json), finds
its prunable units the way src/prune/slim.cpp does (a conv followed by a BN whose channels reach a
conv or a pooled linear), tells apart channels whose BN carries statistics (the identity BNs the RM
operation adds: gamma = sqrt(var + eps), beta = mean) from channels whose BN was trained, and then
removes channels under several rules, evaluating top-1 on the Fashion-MNIST test images:

  removal   zero: the consumer stops seeing the channel (what slicing does without folding);
            fold: the consumer sees the constant act(beta) the channel leaves behind (bias folding)
  ranking   gamma:     |gamma| of the unit's last BN (vanilla network slimming)
            unit:      |gamma| / sqrt(var + eps) on statistic BNs (the identity's learned scale, 1)
            out:       std of the channel's contribution to what the consumer's BN outputs

Usage: experiments/prune_probe.py plain.pth [--data /usr/share/datasets/fashion-mnist] [--ratios ...]
"""
import argparse
import json
import pathlib
import sys

import torch
import torch.nn as nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402
sys.path.insert(0, str(common.ROOT / "scripts"))
from rmnet_sequential import load_sequential  # noqa: E402  (the product's .pth loader)


def top1(model, x, y):
    return common.evaluate(model, x, y)["top1"]


def units_of(seq):
    """[(producer, importance BN, [sliced per-channel layers], consumer, activation layers after BN)]"""
    layers = list(seq)
    out = []
    for p, m in enumerate(layers):
        if not isinstance(m, nn.Conv2d) or (m.groups > 1 and m.groups == m.in_channels == m.out_channels):
            continue
        if p + 1 >= len(layers) or not isinstance(layers[p + 1], nn.BatchNorm2d):
            continue
        imp, acts, consumer = None, [], None
        for j in range(p + 1, len(layers)):
            t = layers[j]
            if isinstance(t, nn.BatchNorm2d):
                imp, acts = j, []
                continue
            if isinstance(t, nn.Conv2d) and t.groups > 1 and t.groups == t.in_channels == t.out_channels:
                acts = []
                continue
            if isinstance(t, (nn.ReLU, nn.PReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)) or \
                    type(t).__name__ == "ChannelClamp":
                acts.append(t)
                continue
            if isinstance(t, (nn.Conv2d, nn.Linear)):
                consumer = j
            break
        if consumer is not None:
            out.append((p, imp, consumer, acts))
    return out


def act_of(acts, v):
    for a in acts:
        if isinstance(a, nn.ReLU):
            v = v.clamp_min(0)
        elif isinstance(a, nn.PReLU):
            v = torch.where(v >= 0, v, a.weight * v)
        elif type(a).__name__ == "ChannelClamp":
            v = torch.maximum(torch.minimum(v, a.max), a.min)
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pth")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3])
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    torch.set_num_threads(2)
    images, y = common.read_mnist(a.data)
    x = common.normalize(images)
    base = load_sequential(a.pth).double()
    x = x.double()
    layers = list(base)
    units = units_of(base)
    print(f"unpruned top-1 {100 * top1(base, x, y):.2f}%")

    # channel table: (unit index, channel, |gamma|, statistic BN?, output-contribution importance)
    chans = []
    for ui, (p, imp, cons, acts) in enumerate(units):
        bn = layers[imp]
        g, b = bn.weight.detach(), bn.bias.detach()
        sd = torch.sqrt(bn.running_var + bn.eps)
        stat = ((g - sd).abs() < 1e-6 * sd.clamp_min(1)) & ((b - bn.running_mean).abs() < 1e-6)
        c = layers[cons]
        w = c.weight.detach()
        if isinstance(c, nn.Conv2d):
            # the consumer's BN scale a_o (1 where there is none)
            a_o = torch.ones(w.shape[0], dtype=w.dtype)
            if cons + 1 < len(layers) and isinstance(layers[cons + 1], nn.BatchNorm2d):
                nb = layers[cons + 1]
                a_o = nb.weight.detach() / torch.sqrt(nb.running_var + nb.eps)
            gsz = w.shape[1]
            norms = torch.zeros(c.in_channels, dtype=w.dtype)
            opg = w.shape[0] // c.groups
            for ch in range(c.in_channels):
                grp = ch // gsz
                rows = slice(grp * opg, (grp + 1) * opg)
                norms[ch] = (a_o[rows].view(-1, 1, 1) * w[rows, ch % gsz]).pow(2).sum().sqrt()
        else:
            norms = w.pow(2).sum(0).sqrt()
        for ch in range(g.numel()):
            chans.append((ui, ch, g[ch].abs().item(), bool(stat[ch]), g[ch].abs().item() * norms[ch].item()))
    n_stat = sum(1 for c in chans if c[3])
    print(f"{len(units)} units, {len(chans)} channels, {n_stat} with a statistic (identity) BN")

    def run(selected, fold):
        m = load_sequential(a.pth).double()
        L = list(m)
        with torch.no_grad():
            for ui, ch in selected:
                p, imp, cons, acts = units[ui]
                bn = L[imp]
                if fold:  # the channel becomes the constant act(beta): exactly what folding leaves
                    bn.weight[ch] = 0.0
                else:  # the consumer never sees it: zero its input slice
                    c = L[cons]
                    if isinstance(c, nn.Conv2d):
                        gsz = c.weight.shape[1]
                        opg = c.weight.shape[0] // c.groups
                        grp = ch // gsz
                        c.weight[grp * opg:(grp + 1) * opg, ch % gsz] = 0.0
                    else:
                        c.weight[:, ch] = 0.0
        return top1(m, x, y)

    rules = {
        "gamma": lambda c: c[2],
        "unit": lambda c: 1.0 if c[3] else c[2],
        "out": lambda c: c[4],
    }
    results = []
    for ratio in a.ratios:
        n = int(ratio * len(chans))
        for name, key in rules.items():
            order = sorted(chans, key=key)[:n]
            sel = [(c[0], c[1]) for c in order]
            n_res = sum(1 for c in order if c[3])
            for fold in (False, True):
                acc = run(sel, fold)
                results.append({"ratio": ratio, "rank": name, "fold": fold, "removed": n, "statistic_removed": n_res,
                                "top1": acc})
                print(f"ratio {ratio:.2f} rank {name:6s} {'fold' if fold else 'zero'}: {n} channels "
                      f"({n_res} statistic) -> {100 * acc:.2f}%", flush=True)
        # residual baseline: trained (non-statistic) channels inside blocks only: here every trained
        # channel except the stem's (unit 0)
        cand = [c for c in chans if not c[3] and c[0] != 0]
        nb = int(ratio * len(cand))
        sel = [(c[0], c[1]) for c in sorted(cand, key=lambda c: c[2])[:nb]]
        for fold in (False, True):
            acc = run(sel, fold)
            results.append({"ratio": ratio, "rank": "residual", "fold": fold, "removed": nb, "top1": acc})
            print(f"ratio {ratio:.2f} residual baseline {'fold' if fold else 'zero'}: {nb} channels -> "
                  f"{100 * acc:.2f}%", flush=True)
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

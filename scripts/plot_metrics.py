#!/usr/bin/env python3
"""Plot a training run's metrics.jsonl (loss and top-1 per epoch) to a PNG.

Usage: scripts/plot_metrics.py RUN_DIR [--out FILE.png] [--title TEXT]
"""
import argparse
import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--out")
    ap.add_argument("--title", default="")
    a = ap.parse_args()
    run = pathlib.Path(a.run)
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
    ep = [r["epoch"] for r in rows]
    fig, (l, r) = plt.subplots(1, 2, figsize=(10, 4))
    l.plot(ep, [x["train_loss"] for x in rows], "o-", label="train")
    l.plot(ep, [x["test_loss"] for x in rows], "s-", label="test")
    l.set_xlabel("epoch"), l.set_ylabel("cross-entropy"), l.legend(), l.grid(alpha=0.3)
    r.plot(ep, [100 * x["train_top1"] for x in rows], "o-", label="train")
    r.plot(ep, [100 * x["test_top1"] for x in rows], "s-", label="test")
    r.set_xlabel("epoch"), r.set_ylabel("top-1 (%)"), r.legend(), r.grid(alpha=0.3)
    summary = run / "summary.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        r.axhline(100 * s["plain_top1"], color="gray", ls="--", lw=1)
        r.text(ep[0], 100 * s["plain_top1"] + 0.3, f"plain network: {100 * s['plain_top1']:.2f}%", fontsize=8)
    fig.suptitle(a.title or f"{run.name}: {rows[-1].get('test_top1', 0) * 100:.2f}% test top-1")
    fig.tight_layout()
    out = pathlib.Path(a.out or run / "training.png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

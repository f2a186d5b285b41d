#!/usr/bin/env python3
"""Draws the chart of docs/benchmarks.md: for each server, each workload's
speed relative to bucketfs (1 = as fast as bucketfs, above 1 = faster),
one bar per filesystem or the direct client, on a log scale.

Usage: chart.py RATIOS_JSON OUTPUT_PNG (the harness in benches/compare
writes RATIOS_JSON and calls this when matplotlib is installed).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"direct": "#888888", "s3fs": "#d62728", "rclone": "#1f77b4"}


def main():
    ratios_path, png_path = sys.argv[1], sys.argv[2]
    with open(ratios_path) as f:
        servers = json.load(f)
    servers = {name: rows for name, rows in servers.items() if rows}
    fig, axes = plt.subplots(
        1,
        len(servers),
        figsize=(7 * len(servers), 7),
        squeeze=False,
    )
    for ax, (server, rows) in zip(axes[0], servers.items()):
        names = [r["title"] for r in rows]
        targets = [t for t in COLOURS if any(t in r["speed"] for r in rows)]
        height = 0.8 / max(len(targets), 1)
        for i, target in enumerate(targets):
            ys, xs = [], []
            for y, row in enumerate(rows):
                if target in row["speed"]:
                    ys.append(y + i * height - 0.4 + height / 2)
                    xs.append(row["speed"][target])
            ax.barh(ys, xs, height=height, color=COLOURS[target], label=target)
        ax.axvline(1.0, color="black", linewidth=1)
        ax.set_xscale("log")
        speeds = [x for r in rows for x in r["speed"].values()] or [1.0]
        ax.set_xlim(min(min(speeds), 0.5) / 1.5, max(max(speeds), 2.0) * 1.5)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("speed relative to bucketfs (log scale; left of the line: slower)")
        ax.set_title(f"server: {server}")
        if targets:  # a server where only bucketfs ran has nothing to compare
            ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)


if __name__ == "__main__":
    main()

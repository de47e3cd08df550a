#!/usr/bin/env python3
"""Plot one dashboard's query results to a PNG: one subplot per panel, with its title and unit.

    python deploy/grafana/render.py PANELS.json OUT.png

PANELS.json is what the privileged test `grafana` writes (tests/tests/privileged/grafana.rs) from
the very queries it ran against its Prometheus: {"title", "panels": [{"title", "unit",
"description", "series": [{"legend", "points": [[unix_s, value], ...]}]}]}. `cargo xtask grafana
--png` runs that test with this script; no Grafana server is involved.
"""

import json
import math
import sys
from datetime import datetime, timezone

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

COLUMNS = 3
MAX_SERIES = 8

IEC = ["B", "KiB", "MiB", "GiB", "TiB"]


def bytes_label(value: float) -> str:
    magnitude = abs(value)
    for unit in IEC:
        if magnitude < 1024 or unit == IEC[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
        magnitude /= 1024
    return str(value)


# Grafana unit id -> (axis formatter, label shown next to the title).
FORMATS = {
    "bytes": (bytes_label, "bytes"),
    "percentunit": (lambda v: f"{v * 100:.0f}%", "%"),
    "ops": (lambda v: f"{v:g}", "per second"),
    "s": (lambda v: f"{v:g} s", "seconds"),
    "short": (lambda v: f"{v:g}", "count"),
    "none": (lambda v: f"{v:g}", "score" ),
}


def plot(ax, panel: dict) -> None:
    formatter, unit_label = FORMATS.get(panel["unit"], (lambda v: f"{v:g}", panel["unit"]))
    series = sorted(
        panel["series"],
        key=lambda s: -max((v for _, v in s["points"] if not math.isnan(v)), default=0),
    )
    for s in series[:MAX_SERIES]:
        times = [datetime.fromtimestamp(t, timezone.utc) for t, _ in s["points"]]
        values = [v for _, v in s["points"]]
        ax.plot(times, values, linewidth=1.2, label=s["legend"][:40])
    left_out = len(series) - MAX_SERIES
    title = f"{panel['title']}  [{unit_label}]"
    if left_out > 0:
        title += f" (+{left_out} series)"
    ax.set_title(title, fontsize=9, loc="left")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: formatter(v)))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", framealpha=0.6)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        document = json.load(f)
    panels = document["panels"]
    rows = math.ceil(len(panels) / COLUMNS)
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(6 * COLUMNS, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        plot(ax, panel)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(document["title"] + " (UTC)", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(sys.argv[2], dpi=80)
    print(f"wrote {sys.argv[2]}: {len(panels)} panels")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Still pictures of a running device's maps, for papers and issues: ``blockemu ctl ... --png FILE``.

The same views as the live page (blockemu/control/web/), drawn with
matplotlib from the same JSON: the UFS fragmentation map
(``/api/v1/live/fragmentation-map``), the zone map (``/api/v1/zones``) and
zram's pages per algorithm (``/api/v1/live/zram`` and ``/api/v1/zram``).
Each function takes that JSON and a path; nothing here talks to the server.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# The live page's colours (blockemu/control/web/static/live.js ZONE_COLOURS).
ZONE_COLOURS = {
    "empty": "#e8e8e8", "implicitly_open": "#7fc97f", "explicitly_open": "#2ca02c", "closed": "#fdc086",
    "full": "#386cb0", "read_only": "#bf5b17", "offline": "#555555", "not_write_pointer": "#bbbbff",
}
ZONE_COLUMNS = 16
MAP_COLUMNS = 128


class PictureError(Exception):
    """A picture that cannot be drawn (matplotlib missing, a file that cannot be written)."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PictureError("--png needs matplotlib: 'make setup' installs it in .venv "
                           "(or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: str | Path) -> None:
    try:
        figure.savefig(path, dpi=110, bbox_inches="tight")
    except OSError as err:
        raise PictureError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        figure.clf()


def _mib(n: float) -> str:
    """A size in the largest binary unit that keeps it at 1 or more."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def fragmentation_png(layout: dict[str, Any], summary: dict[str, Any], path: str | Path) -> None:
    """Each logical sector coloured by its physical run's length, and logical offset against physical page."""
    plt = _pyplot()
    import numpy as np

    runs = np.asarray(layout["run"], dtype=float)
    ppn = np.asarray(layout["ppn"], dtype=np.int64)
    rows = math.ceil(len(runs) / MAP_COLUMNS)
    grid = np.full(rows * MAP_COLUMNS, np.nan)
    grid[: len(runs)] = np.where(runs > 0, np.log2(np.maximum(runs, 1)), np.nan)
    top = max(1.0, math.log2(max(layout["window_sectors"], 2)))
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    cmap = plt.get_cmap("RdYlGn").copy()
    cmap.set_bad("#222222")
    image = left.imshow(grid.reshape(rows, MAP_COLUMNS), cmap=cmap, vmin=0, vmax=top, aspect="auto",
                        interpolation="nearest")
    sector = layout["sector_bytes"]
    first = layout["first_sector"] * sector
    left.set_title(f"logical {_mib(first)} … {_mib(first + len(runs) * sector)}: run length per sector")
    left.set_xlabel(f"sector within row ({MAP_COLUMNS} per row)")
    left.set_ylabel("row")
    bar = figure.colorbar(image, ax=left)
    ticks = list(range(int(top) + 1))
    bar.set_ticks(ticks)
    bar.set_ticklabels([str(2 ** t) for t in ticks])
    bar.set_label("physical run (sectors)")
    mapped = ppn >= 0
    logical = np.arange(len(ppn))[mapped]
    right.scatter(logical * sector / 1048576 + first / 1048576, ppn[mapped], c=np.log2(runs[mapped]), cmap=cmap,
                  vmin=0, vmax=top, s=2, marker="s", linewidths=0)
    right.set_title("logical offset against physical page")
    right.set_xlabel("logical offset (MiB)")
    right.set_ylabel("physical page")
    hid = layout["hid"]
    figure.suptitle(f"UFS fragmentation: {_mib(summary['fragmented_bytes'])} of {_mib(summary['mapped_bytes'])} "
                    f"mapped fragmented ({summary['fragmented_percent']}%); HID {hid['state']}, "
                    f"progress {hid['progress_ratio']}%")
    _save(figure, path)


def zones_png(zones: list[dict[str, Any]], path: str | Path) -> None:
    """One cell per zone, coloured by condition, filled to its write pointer against its capacity."""
    plt = _pyplot()
    from matplotlib.patches import Patch, Rectangle

    rows = max(1, math.ceil(len(zones) / ZONE_COLUMNS))
    figure, axes = plt.subplots(figsize=(ZONE_COLUMNS * 0.55 + 1.5, rows * 0.55 + 1.4))
    for zone in zones:
        x, y = zone["index"] % ZONE_COLUMNS, rows - 1 - zone["index"] // ZONE_COLUMNS
        colour = ZONE_COLOURS.get(zone["condition"], "#ff00ff")
        axes.add_patch(Rectangle((x + 0.05, y + 0.05), 0.9, 0.9, facecolor=colour, edgecolor="#999999"))
        if zone["wp"] is not None and zone["capacity"]:
            filled = min(1.0, (zone["wp"] - zone["start"]) / zone["capacity"])
            axes.add_patch(Rectangle((x + 0.05, y + 0.05), 0.9, 0.9 * filled, facecolor="black", alpha=0.35))
        axes.text(x + 0.5, y + 0.5, str(zone["index"]), ha="center", va="center", fontsize=6)
    axes.set_xlim(0, ZONE_COLUMNS)
    axes.set_ylim(0, rows)
    axes.set_aspect("equal")
    axes.axis("off")
    present = sorted({z["condition"] for z in zones})
    axes.legend(handles=[Patch(facecolor=ZONE_COLOURS.get(c, "#ff00ff"), label=c) for c in present],
                loc="upper center", bbox_to_anchor=(0.5, 0), ncol=min(4, len(present) or 1), fontsize=8)
    counts = ", ".join(f"{sum(z['condition'] == c for z in zones)} {c}" for c in present)
    axes.set_title(f"{len(zones)} zones: {counts}\n(shade: write pointer against capacity)", fontsize=9)
    _save(figure, path)


def zram_png(census: dict[str, Any], attributes: dict[str, Any], path: str | Path) -> None:
    """Pages and stored bytes per algorithm (with its priority), and mm_stat."""
    plt = _pyplot()
    keys = sorted(census["pages"])
    labels = [f"{k}\n(priority {census['priorities'][k]})" if k in census["priorities"] else k for k in keys]
    figure, (pages, stored) = plt.subplots(1, 2, figsize=(11, 4))
    pages.bar(labels, [census["pages"][k] for k in keys], color="#1f77b4")
    pages.set_title("stored pages")
    stored.bar(labels, [census["bytes"][k] / 1024 for k in keys], color="#ff7f0e")
    stored.set_title("stored bytes (KiB)")
    mm = attributes["mm_stat"]
    figure.suptitle(f"zram: {_mib(mm['orig_data_size'])} stored in {_mib(mm['compr_data_size'])} "
                    f"(pool {_mib(mm['mem_used_total'])}); same {census['same_pages']}, "
                    f"huge {census['huge_pages']}, idle {census['idle_pages']}, "
                    f"async backlog {census['staged_pages']} pages")
    _save(figure, path)

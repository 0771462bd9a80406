"""Write a calibration's report directory atomically: calibration.json, .md and .png.

``calibration.png``: one panel per condition, histograms of the real values, the start
(before) and the result (after), on the compared scale (log1p for sharpness).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from generator import atomic
from generator.fmt import number
from policy.calibrate import CalibrationResult


def _g(v: Any) -> str:  # 3 significant digits: conditions span many scales
    return number(v, 3, "g")


def to_markdown(report: dict[str, Any]) -> str:
    d = report["distance"]
    lines = [
        f"# Calibration: scenario `{report['scenario']}` to `{report['real']['path']}`", "",
        f"Real set: {report['real']['images']} images ({report['real']['kind']}, "
        f"{'labelled' if report['real'].get('labelled') else 'unlabeled'}); seed {report['seed']}; "
        f"{report['trials_run']} trials of {report['options']['images_per_trial']} images, best trial "
        f"{report['best_trial']}; {report.get('seconds', 0):.0f} s.", "",
        f"Mean distance (W1 / real spread): before **{d['before']:.3f}**, after **{d['after']:.3f}** "
        f"(verification renders); search sample {d['search_start']:.3f} → {d['search_best']:.3f}.", "",
        "| condition | real mean [q25, q75] | before mean [q25, q75] | after mean [q25, q75] | distance before → after "
        "| fitted parameters |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in report["conditions"].items():
        cells = [f"{_g(c[k]['mean'])} [{_g(c[k]['q25'])}, {_g(c[k]['q75'])}]"
                 for k in ("real", "before", "after")]
        dist = f"{c['distance']['before']:.3f} → {c['distance']['after']:.3f}"
        lines.append(f"| {name}{' (log1p)' if c['transform'] == 'log1p' else ''} | " + " | ".join(cells)
                     + f" | {dist} | {', '.join(c['parameters']) or '–'} |")
    for note in report.get("notes", []):
        lines += ["", f"**Note:** {note}"]
    if report["not_measured"]:
        lines += ["", "Not compared (no parameter maps to them, or the real set cannot measure them): "
                  + ", ".join(report["not_measured"]) + "."]
    lines += ["", "Fitted distributions:", ""]
    after = report["params"]["after"]
    lines += [f"- `{k}`: {v}" for k, v in sorted(after.get("distributions", {}).items())]
    lines.append(f"- uniform share: {after.get('uniform_share', 0)}")
    return "\n".join(lines) + "\n"


def _png(result: CalibrationResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = result.samples
    names = list(values)
    cols = min(3, max(1, len(names)))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        parts = values[name]
        pooled = np.concatenate([v for v in parts.values() if v.size]) if any(v.size for v in parts.values()) else None
        bins = np.histogram_bin_edges(pooled, bins=24) if pooled is not None and np.ptp(pooled) > 0 else 10
        for label, colour in (("real", "black"), ("before", "tab:orange"), ("after", "tab:blue")):
            if parts[label].size:
                ax.hist(parts[label], bins=bins, density=True, histtype="step", lw=1.6, color=colour, label=label)
        c = result.report["conditions"][name]
        ax.set_title(f"{name}: {c['distance']['before']:.2f} → {c['distance']['after']:.2f}", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(result: CalibrationResult, out: str | Path, overwrite: bool = True) -> Path:
    """Write ``calibration.json``, ``calibration.md`` and ``calibration.png`` into ``out``
    (built in a temporary sibling and renamed into place)."""
    with atomic.atomic_dir(out, overwrite=overwrite) as tmp:
        atomic.write_json(tmp / "calibration.json", atomic.jsonable(result.report))
        atomic.write_text(tmp / "calibration.md", to_markdown(result.report))
        _png(result, tmp / "calibration.png")
    return Path(out)

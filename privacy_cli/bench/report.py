"""Bench reports: a Rich table for the terminal, and ``--out DIR`` files.

``results.json`` (everything, the same document ``--json`` prints), ``per_image.csv`` (one row per
method and image), ``report.md`` (tables as in the papers, settings, libraries, data range, image
size, N, FID reliability, unavailable metrics with the command that makes them available,
calibration tables) and PNG plots drawn with matplotlib's Agg backend: ``bars.png`` (per-method
bars), ``privacy_quality.png`` (identity similarity against SSIM, and both against strength) and,
for whole-image methods (stylize), ``contact_sheet.png`` (originals and each method, to judge the look).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .paper004 import judge_line, paper004_tables, table_rows
from .results import BenchResult, MethodResult, iter_metric_rows, library_versions
from .specs import CLASSIFIER, CONTENT, PRIVACY, QUALITY, QUALITY_REGION, UTILITY

#: Display names (as the papers write them).
DISPLAY = {
    "ssim": "SSIM",
    "psnr": "PSNR",
    "mae": "MAE",
    "mse": "MSE",
    "lpips_alex": "LPIPS-alex",
    "lpips_vgg": "LPIPS-vgg",
    "fid": "FID",
    "ssim_region": "SSIM (region)",
    "psnr_region": "PSNR (region)",
    "mae_region": "MAE (region)",
    "mse_region": "MSE (region)",
    "lpips_alex_region": "LPIPS-alex (region)",
    "lpips_vgg_region": "LPIPS-vgg (region)",
    "mae_outside": "MAE (outside)",
    "content_mae": "MAE (content)",
    "fm": "FM",
    "adv": "Adv",
    "pl_v": "PL-V",
    "pl_r": "PL-R",
    "identity_similarity": "Id. similarity",
    "deid_rate": "De-id rate",
    "reid_rank1": "Re-id rank-1",
    "detect_rate_dlib": "Detect (dlib)",
    "detect_rate_mtcnn": "Detect (MTCNN)",
    "top1_change": "Top-1 change",
    "top5_change": "Top-5 change",
    "top1_change_rescaled": "Top-1 change (rescaled+cropped)",
    "top5_change_rescaled": "Top-5 change (rescaled+cropped)",
    "top1_change_jpeg95": "Top-1 change (JPEG q95)",
    "top5_change_jpeg95": "Top-5 change (JPEG q95)",
    "top1_change_jpeg75": "Top-1 change (JPEG q75)",
    "top5_change_jpeg75": "Top-5 change (JPEG q75)",
}

#: Tables of the report: title, metrics, the paper table they mirror.
SECTIONS: list[tuple[str, tuple[str, ...], str]] = [
    ("Image quality", QUALITY, "ERASER Table 2; Private-Encoder Tables 1-3"),
    ("Image quality inside the regions", QUALITY_REGION, "region-only variants"),
    ("Content difference inside the regions", CONTENT, "ERASER Table 3 (higher = more different)"),
    ("Privacy", PRIVACY, "Private-Encoder Table 4 and section 4.1.2; re-identification attack"),
    ("Utility", UTILITY, "Private-Encoder Table 5 (face detection); Pixel Privacy (classifier top-k)"),
]


def display(name: str) -> str:
    return DISPLAY.get(name, name)


def arrow(r: Any) -> str:
    hib = getattr(r, "higher_is_better", None)
    return "↑" if hib is True else ("↓" if hib is False else "")


def fmt_value(r: Any, digits: int | None = None) -> str:
    """A result as text: ``0.841``, ``27.78``, ``inf``, or ``n/a`` when unavailable."""
    if r is None:
        return ""
    if not getattr(r, "available", False):
        return "n/a"
    v = float(r.value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf"
    name = getattr(r, "name", "")
    if digits is None:
        digits = 2 if (name.startswith("psnr") or name == "fid" or abs(v) >= 10) else 3
        if name in ("mse", "mse_region") or 0 < abs(v) < 0.01:
            digits = 4
    return f"{v:.{digits}f}"


def _present(result: BenchResult, names: Sequence[str]) -> list[str]:
    return [n for n in names if any(n in m.metrics for m in result.methods)]


# ------------------------------------------------------------------------------------- results.json


def _json_safe(o: Any) -> Any:
    if isinstance(o, float):
        if math.isnan(o):
            return None
        if math.isinf(o):
            return "inf" if o > 0 else "-inf"
        return o
    if isinstance(o, dict):
        return {str(k): _json_safe(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_json_safe(v) for v in o]
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item") and callable(o.item):
        return _json_safe(o.item())
    return o


def results_json(result: BenchResult) -> dict[str, Any]:
    """The whole run as one JSON-ready document (``results.json`` and ``--json``)."""
    cfg = result.config
    unavailable = result.unavailable()
    doc = {
        "privpix_bench": 1,
        "created": result.created,
        "seconds": round(result.seconds, 3),
        "dataset": result.dataset.describe(),
        "settings": {
            "metrics": list(cfg.metrics) if cfg.metrics else None,
            "max_side": cfg.max_side,
            "regions": result.regions_source,
            "box_scale": cfg.box_scale,
            "dilate": cfg.dilate,
            "recognizer": cfg.recognizer,
            "classifier": cfg.classifier,
            "class_labels": cfg.class_labels,
            "fid_dims": cfg.fid_dims,
            "device": cfg.device,
            "cache_dir": str(cfg.cache_dir) if cfg.cache_dir else None,
            "data_range": "images in [0, 1] (data range 1) for every pixel metric",
        },
        "image_sizes": result.image_sizes,
        "libraries": library_versions(),
        "cache": result.cache.to_json(),
        "control": result.control,
        "methods": [m.to_json() for m in result.methods],
        "unavailable": [{"metric": k, **v} for k, v in unavailable.items()],
        "skipped": [{"image": k, "reason": r} for k, r in result.skipped],
        "calibration": result.calibration,
        "paper_004": paper004_tables(result),
    }
    return _json_safe(doc)


def write_per_image_csv(result: BenchResult, path: Path) -> Path:
    """One row per (method, image): method, key, image, identity and every per-image metric."""
    rows = list(iter_metric_rows(result))
    cols: list[str] = ["method", "key", "image", "identity"]
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _csv_cell(r.get(k)) for k in cols})
    return path


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:.6g}"
    return v


# ------------------------------------------------------------------------------------ terminal table


def print_tables(result: BenchResult, console: Any, err_console: Any | None = None) -> None:
    """Rich tables (one per metric group that has values) and the control and calibration lines on
    ``console``; notes, unavailable metrics (with their fetch command) and failures on ``err_console``
    (default: the same console)."""
    from rich.table import Table

    err = err_console if err_console is not None else console

    ds = result.dataset
    console.print(
        f"[bold]privpix bench[/] {ds.format} {ds.root}"
        + (f" ({ds.split})" if ds.split else "")
        + f": {len(result.methods[0].per_image) if result.methods else 0} images, "
        f"regions {result.regions_source}, max side {result.config.max_side or 'native'} px"
    )
    for title, names, paper in SECTIONS:
        present = _present(result, names)
        if not present or all(
            not getattr(m.metrics.get(n), "available", False) for m in result.methods for n in present
        ):
            continue
        t = Table(title=f"{title} [dim]({paper})[/]", title_justify="left")
        t.add_column(
            "method", style="bold", no_wrap=True, min_width=max(len(m.label) for m in result.methods)
        )
        for n in present:
            r0 = next((m.metrics[n] for m in result.methods if n in m.metrics), None)
            t.add_column(f"{display(n)} {arrow(r0)}".strip(), justify="right")
        for m in result.methods:
            t.add_row(m.label, *[fmt_value(m.metrics.get(n)) for n in present])
        console.print(t)
    _print_paper004(result, console)
    if result.control:
        c = result.control
        colour = "green" if c.get("passed") else "red"
        console.print(f"[{colour}]identity control:[/] {c.get('reason')}")
    if result.calibration:
        for tgt in result.calibration["targets"]:
            parts = [
                f"{c['method']} {c['option']}={c['strength']:g} ({_num(c['achieved'])}"
                + ("" if c["reached"] else ", target not reached")
                + ")"
                for c in tgt["methods"]
            ]
            console.print(
                f"[bold]calibrated to {tgt['label']}[/] on {result.calibration['subset']} images: "
                + "; ".join(parts)
            )
    from rich.markup import escape

    for n in _reliability_notes(result):
        err.print(f"[yellow]note:[/] {escape(n)}")
    unav = result.unavailable()
    if unav:
        err.print("[yellow]unavailable metrics[/] (reported as n/a, never as 0):")
        for name, u in unav.items():
            how = (
                f" -> run: [bold]{escape(u['fetch'])}[/]"
                if u.get("fetch") and u["fetch"] not in u["reason"]
                else ""
            )
            err.print(f"  {display(name)} ({name}): {escape(u['reason'])}{how}")
    errs = [(m.label, k, e) for m in result.methods for k, e in m.errors]
    if errs:
        err.print(f"[red]{len(errs)} image(s) failed[/] (first: {escape(errs[0][1])}: {escape(errs[0][2])})")


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.3f}"


def _reliability_notes(result: BenchResult) -> list[str]:
    out = []
    for m in result.methods:
        r = m.metrics.get("fid")
        if r is not None and getattr(r, "available", False) and not r.extra.get("reliable", True):
            out.append(
                f"FID over N={r.n} images (< {r.extra.get('dims', 2048)}): biased and unreliable, only comparable "
                "between runs with the same N"
            )
            break
    return out


# ----------------------------------------------------------------------------------------- markdown


def _print_paper004(result: BenchResult, console: Any) -> None:
    """Paper 004's tables with our values next to the paper's (see :mod:`.paper004`)."""
    from rich.markup import escape
    from rich.table import Table

    doc = paper004_tables(result)
    if doc is None or not doc["tables"]:
        return
    for tab in doc["tables"]:
        header, rows = table_rows(tab, short=True)
        title = "Paper 004: " + tab["title"] + (f" (its {tab['paper_table']})" if tab["paper_table"] else "")
        t = Table(title=escape(title), title_justify="left")
        for h in header:
            t.add_column(escape(h), justify="left" if h in ("Method", "Setting") else "right")
        for r in rows:
            t.add_row(*[escape(x) for x in r])
        console.print(t)
    console.print(f"[dim]{escape(judge_line(doc))} '!' = target not reached.[/]")


def _paper004_md(result: BenchResult) -> list[str]:
    doc = paper004_tables(result)
    if doc is None:
        return []
    out = ["## Paper 004 (Private-Encoder) side by side", "", judge_line(doc), ""]
    for tab in doc["tables"]:
        header, rows = table_rows(tab)
        out += [f"### {tab['title']}" + (f" (paper {tab['paper_table']})" if tab["paper_table"] else ""), ""]
        out += [
            _md_table(header, [[f"`{r[1]}`" if i == 1 else c for i, c in enumerate(r)] for r in rows]),
            "",
        ]
    return out


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _md_cell(r: Any) -> str:
    s = fmt_value(r)
    if r is not None and getattr(r, "available", False):
        std = r.extra.get("std") if isinstance(getattr(r, "extra", None), dict) else None
        if std is not None and not (isinstance(std, float) and math.isnan(std)):
            s += f" ± {float(std):.2g}"
    return s


def _paper002_md(result: BenchResult) -> list[str]:
    """Paper 002's Table 1 layout: top-1 / top-5 before and after, per view of the image."""
    from .classifier_scoring import CLASSIFIER_METRICS, CROP_KEEP, RESCALE, VIEW_LABELS

    views = [(v, a, b) for v, (a, b) in CLASSIFIER_METRICS.items()]
    views = [
        x for x in views if any(getattr(m.metrics.get(x[1]), "available", False) for m in result.methods)
    ]
    if not views:
        return []
    label = VIEW_LABELS
    kinds = {
        r.extra.get("labels")
        for m in result.methods
        for _, a, _b in views
        if getattr(r := m.metrics.get(a), "available", False)
    }
    what = (
        "accuracy against the class labels"
        if kinds == {"class labels"}
        else "agreement with the original's top-1"
    )
    header = ["Method"]
    for v, _, _ in views:
        header += [
            f"Top-1 before ({label[v]})",
            f"Top-1 after ({label[v]})",
            f"Top-5 before ({label[v]})",
            f"Top-5 after ({label[v]})",
        ]
    rows = []
    for m in result.methods:
        row = [f"`{m.label}`"]
        for _, a, b in views:
            for name in (a, b):
                r = m.metrics.get(name)
                ok = getattr(r, "available", False)
                row += [
                    _num(r.extra.get("before")) if ok else "n/a",
                    _num(r.extra.get("after")) if ok else "n/a",
                ]
        rows.append(row)
    return [
        "## Pixel Privacy Table 1 (paper 002)",
        "",
        f"_{result.config.classifier}: top-1 / top-5 {what}; each view is applied to originals and outputs "
        f"alike (rescaled+cropped: {RESCALE}x and the centre {CROP_KEEP:.0%} per side; JPEG: a 4:2:0 "
        "re-encode)_",
        "",
        _md_table(header, rows),
        "",
    ]


def markdown(result: BenchResult, plots: Sequence[str] = ()) -> str:
    """The Markdown report (see the module docstring)."""
    ds = result.dataset
    cfg = result.config
    libs = library_versions()
    n_img = len(result.methods[0].per_image) if result.methods else 0
    out: list[str] = ["# privpix bench report", ""]
    out.append(f"- Dataset: **{ds.format}** `{ds.root}`" + (f", split `{ds.split}`" if ds.split else ""))
    if ds.attributes:
        out.append(f"- Attributes: {', '.join(ds.attributes)}")
    out.append(
        f"- Images scored: **N = {n_img}** ({len(result.skipped)} skipped"
        + (
            f", {ds.small_instances} Visual Redactions instances under 25x25 px ignored"
            if ds.small_instances
            else ""
        )
        + ")"
    )
    if ds.has_identities:
        out.append(f"- Identities: {ds.n_identities}")
    sizes = result.image_sizes
    size_txt = (
        f"{sizes['min'][0]}x{sizes['min'][1]} to {sizes['max'][0]}x{sizes['max'][1]} px (median "
        f"{sizes['median'][0]}x{sizes['median'][1]})"
        if "min" in sizes
        else "n/a"
    )
    out.append(
        f"- Image size: {size_txt}; originals downscaled so the longer side is at most "
        f"{cfg.max_side} px (OpenCV INTER_AREA)"
        if cfg.max_side
        else f"- Image size: {size_txt} (native)"
    )
    out.append(
        "- Data range: pixel metrics on RGB in [0, 1] (data range 1); SSIM Gaussian 11x11, sigma 1.5, "
        "K1 0.01, K2 0.03 (torchmetrics, valid region as scikit-image); LPIPS v0.1 (lpips); FID pytorch-fid "
        "InceptionV3 pool3 at 299x299"
    )
    geometry = (
        f"; detected face boxes scaled x{cfg.box_scale:g}"
        if result.regions_source.startswith("detected")
        else ""
    )
    out.append(
        f"- Regions: {result.regions_source}{geometry}" + (f", dilated {cfg.dilate} px" if cfg.dilate else "")
    )
    out.append(
        f"- Face recogniser: {cfg.recognizer}; classifier for top-k: {cfg.classifier}; device: {cfg.device}"
    )
    out.append("- Libraries: " + ", ".join(f"{k} {v}" for k, v in libs.items()))
    c = result.cache
    out.append(
        f"- Run time {result.seconds:.1f} s; cache: {c.outputs_computed} outputs computed, {c.outputs_cached} reused, "
        f"{c.values_computed} metric values computed, {c.values_cached} reused"
    )
    out.append("")
    for note in _reliability_notes(result):
        out += [f"> **Note:** {note}", ""]

    for title, names, paper in SECTIONS:
        present = _present(result, names)
        if not present:
            continue
        out += [f"## {title}", "", f"_{paper}_", ""]
        header = ["Method"] + [f"{display(n)} {arrow(_first(result, n))}".strip() for n in present]
        rows = [[f"`{m.label}`"] + [_md_cell(m.metrics.get(n)) for n in present] for m in result.methods]
        out += [_md_table(header, rows), ""]
        ns = sorted(
            {
                m.metrics[n].n
                for m in result.methods
                for n in present
                if getattr(m.metrics.get(n), "available", False)
            }
        )
        if ns:
            out += [
                f"N per value: {', '.join(str(n) for n in ns)} (mean ± standard deviation over images).",
                "",
            ]

    out += _paper002_md(result)
    out += _paper004_md(result)

    if result.control:
        ctl = result.control
        out += ["## Identity control", ""]
        out.append(
            f"Rank-1 re-identification of the **unprocessed** originals against the other originals "
            f"({ctl.get('recognizer')}): {_num(ctl.get('rate'))} over {ctl.get('n')} gradable probes "
            f"(chance {_num(ctl.get('chance'))}). {ctl.get('reason')}"
        )
        out.append("")

    if result.calibration:
        out += _calibration_md(result)

    unav = result.unavailable()
    if unav:
        out += ["## Unavailable metrics", "", "Not measured (reported as n/a, never as 0):", ""]
        for name, u in unav.items():
            fetch = f" — make it available with `{u['fetch']}`" if u.get("fetch") else " (no download helps)"
            out.append(f"- **{display(name)}** (`{name}`): {u['reason']}{fetch}")
        out.append("")

    notes = _metric_notes(result)
    if notes:
        out += ["## Metric notes", ""]
        out += [f"- **{display(n)}** (`{n}`): {'; '.join(ns)}" for n, ns in notes.items()]
        out.append("")
    errs = [(m.label, k, e) for m in result.methods for k, e in m.errors]
    if errs or result.skipped:
        out += ["## Skipped and failed images", ""]
        out += [f"- skipped `{k}`: {r}" for k, r in result.skipped[:50]]
        out += [f"- `{lab}` failed on `{k}`: {e}" for lab, k, e in errs[:50]]
        out.append("")
    if plots:
        out += ["## Plots", ""]
        out += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
        out.append("")
    return "\n".join(out)


def _first(result: BenchResult, name: str) -> Any:
    return next((m.metrics[name] for m in result.methods if name in m.metrics), None)


def _metric_notes(result: BenchResult) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in result.methods:
        for n, r in m.metrics.items():
            if not getattr(r, "available", False):
                continue
            lib = getattr(r, "library", "")
            notes = ([f"library {lib}"] if lib else []) + [x for x in r.notes if not x[:1].isdigit()]
            cur = out.setdefault(n, [])
            for x in notes:
                if x not in cur:
                    cur.append(x)
    return out


def _calibration_md(result: BenchResult) -> list[str]:
    cal = result.calibration or {}
    out = ["## Calibrated comparison", ""]
    out.append(
        f"_Private-Encoder Tables 1-5: each method's strength tuned on the first {cal.get('subset')} images "
        f"(tolerance {cal.get('tolerance')}), then scored on all images._"
    )
    out.append("")
    for tgt in cal.get("targets", []):
        if tgt["metric"] == "identity_similarity":
            cols = ["identity_similarity", "mse", "ssim", "fid", "detect_rate_dlib"]
        else:
            cols = ["ssim", "identity_similarity", "deid_rate", "detect_rate_dlib", "mse", "fid"]
        cols = [c for c in cols if _first(result, c) is not None]
        out += [f"### At {tgt['label']}", ""]
        header = ["Method", "Strength", "Subset value"] + [
            f"{display(c)} {arrow(_first(result, c))}".strip() for c in cols
        ]
        rows = []
        for c in tgt["methods"]:
            try:
                m = result.method(c["label"])
            except KeyError:
                continue
            sub = _num(c["achieved"]) + ("" if c["reached"] else " (not reached)")
            rows.append(
                [c["method"], f"{c['option']}={c['strength']:g}", sub]
                + [_md_cell(m.metrics.get(x)) for x in cols]
            )
        out += [_md_table(header, rows), ""]
    return out


# -------------------------------------------------------------------------------------------- plots


def _family(m: MethodResult) -> tuple[str, float | None, str | None]:
    """(method name, strength value, option) for curves: the single numeric option if any."""
    from .calibrate import STRENGTH

    opt = STRENGTH.get(m.spec.name)
    kw = m.spec.kwargs
    if opt is not None and isinstance(kw.get(opt.option), int | float):
        return m.spec.name, float(kw[opt.option]), opt.option
    nums = [(k, v) for k, v in kw.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(nums) == 1:
        return m.spec.name, float(nums[0][1]), nums[0][0]
    return m.spec.name, None, None


#: metrics whose values live in [0, 1]: rates and fractions get a 0-1 axis and clipped error bars
UNIT_INTERVAL = set(PRIVACY + UTILITY) - {"identity_similarity"} | {"ssim", "ssim_region", "deid_rate"}


def _bounds(name: str, r: Any) -> tuple[float, float] | None:
    if name in UNIT_INTERVAL or getattr(r, "unit", "") == "fraction":
        return 0.0, 1.0
    if name == "identity_similarity":
        return -1.0, 1.0
    return None


def clipped_errors(values: Sequence[float], stds: Sequence[float], bounds: tuple[float, float] | None):
    """Error bars ``[lower, upper]`` of ``values`` ± ``stds`` clipped to ``bounds`` (e.g. a rate's [0, 1])."""
    lo = [max(0.0, min(e, v - bounds[0])) if bounds else e for v, e in zip(values, stds, strict=True)]
    hi = [max(0.0, min(e, bounds[1] - v)) if bounds else e for v, e in zip(values, stds, strict=True)]
    return [lo, hi]


def _judge(result: BenchResult, name: str) -> str:
    """Who measured ``name``: the recogniser, detector or classifier, else the metric's library."""
    if name in PRIVACY:
        return result.config.recognizer
    if name == "detect_rate_dlib":
        return "dlib HOG"
    if name == "detect_rate_mtcnn":
        return "MTCNN"
    if name in CLASSIFIER:
        return result.config.classifier
    return getattr(_first(result, name), "library", "") or "privpix"


def axis_label(result: BenchResult, name: str) -> str:
    """``"SSIM ↑ (torchmetrics)"``: the metric, its direction and its judge."""
    return f"{display(name)} {arrow(_first(result, name))} ({_judge(result, name)})".replace("  ", " ")


def make_plots(result: BenchResult, out_dir: Path) -> list[Path]:
    """Write ``bars.png`` and (when identity similarity or several strengths are measured)
    ``privacy_quality.png`` into ``out_dir``; returns the written paths."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    # bars: every available metric, one panel each
    names = [
        n
        for _t, group, _p in SECTIONS
        for n in group
        if any(getattr(m.metrics.get(n), "available", False) for m in result.methods)
    ]
    if names and result.methods:
        cols = min(4, len(names))
        rows = math.ceil(len(names) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
        labels = [m.label for m in result.methods]
        for ax, n in zip(axes.flat, names, strict=False):
            vals, errs = [], []
            bounds = _bounds(n, _first(result, n))
            for m in result.methods:
                r = m.metrics.get(n)
                ok = getattr(r, "available", False) and math.isfinite(float(r.value))
                vals.append(float(r.value) if ok else 0.0)
                errs.append(float(r.extra.get("std", 0.0) or 0.0) if ok else 0.0)
            ax.bar(
                range(len(labels)),
                vals,
                # error bars never leave the metric's range (a rate's std can reach past 0 or 1)
                yerr=clipped_errors(vals, errs, bounds),
                color=[f"C{i % 10}" for i in range(len(labels))],
                capsize=2,
            )
            if bounds:  # rates on their whole range: a 0.003 difference stays a 0.003 difference
                ax.set_ylim(min(bounds[0], 0.0), bounds[1] * 1.05)
            ax.set_title(f"{display(n)} {arrow(_first(result, n))}".strip(), fontsize=9)
            ax.set_ylabel(axis_label(result, n), fontsize=7)
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
            for i, m in enumerate(result.methods):
                if not getattr(m.metrics.get(n), "available", False):
                    ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7, color="grey")
        for ax in list(axes.flat)[len(names) :]:
            ax.axis("off")
        fig.suptitle("privpix bench: per-method means (error bars: std over images)", fontsize=10)
        fig.tight_layout()
        p = out_dir / "bars.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    p = _privacy_quality_plot(result, out_dir, plt)
    if p is not None:
        written.append(p)
    p = contact_sheet(result, out_dir)
    if p is not None:
        written.append(p)
    return written


def contact_sheet(result: BenchResult, out_dir: Path, n_images: int = 3, height: int = 240) -> Path | None:
    """``contact_sheet.png``: the first ``n_images`` originals (rows) and each whole-image method
    (columns, e.g. every stylize style) applied to the whole image at ``height`` pixels, labelled.
    None when no whole-image method was benched. A method that fails there gets a grey "n/a" cell."""
    from PIL import Image, ImageDraw

    from ..errors import PrivpixError
    from ..methods import is_whole_image
    from .originals import _load_resized
    from .specs import IDENTITY_METHOD, apply_method

    specs = [m.spec for m in result.methods if m.spec.name != IDENTITY_METHOD and is_whole_image(m.spec.name)]
    items = [it for it in result.dataset.items if it.processed is None][:n_images]
    if not specs or not items:
        return None
    rows = []
    for it in items:
        rgb, _ = _load_resized(it.image, 0)
        w = max(8, round(rgb.shape[1] * height / rgb.shape[0]))
        rgb = np.asarray(Image.fromarray(rgb).resize((w, height), Image.Resampling.LANCZOS))
        cells = [("original", rgb)]
        for spec in specs:
            try:
                out = apply_method(spec, rgb, np.ones(rgb.shape[:2], np.float32))
            except (PrivpixError, OSError, RuntimeError):
                out = np.full_like(rgb, 128)
            cells.append((spec.label, out))
        rows.append(cells)
    label_h = 18
    widths = [max(r[i][1].shape[1] for r in rows) for i in range(len(rows[0]))]
    sheet = Image.new("RGB", (sum(widths), len(rows) * (height + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, cells in enumerate(rows):
        x = 0
        for i, (label, img) in enumerate(cells):
            y = j * (height + label_h)
            sheet.paste(Image.fromarray(img), (x, y + label_h))
            draw.text((x + 3, y + 3), label, fill="black")
            x += widths[i]
    p = out_dir / "contact_sheet.png"
    sheet.save(p)
    return p


def _curve_points(result: BenchResult) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """method -> metric -> [(strength, value)], from bench rows and calibration evaluations."""
    pts: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for m in result.methods:
        name, s, _opt = _family(m)
        if s is None:
            continue
        for metric in ("identity_similarity", "ssim"):
            r = m.metrics.get(metric)
            if getattr(r, "available", False):
                pts.setdefault(name, {}).setdefault(metric, []).append((s, float(r.value)))
    for tgt in (result.calibration or {}).get("targets", []):
        for c in tgt["methods"]:
            for s, v in c["evaluations"]:
                if v is not None:
                    pts.setdefault(c["method"], {}).setdefault(tgt["metric"] + " (subset)", []).append((s, v))
    for d in pts.values():
        for k in d:
            d[k] = sorted(set(d[k]))
    return pts


def _privacy_quality_plot(result: BenchResult, out_dir: Path, plt: Any) -> Path | None:
    """``privacy_quality.png``: identity similarity against SSIM per method (when both were measured)
    and metrics over method strength (when a method was run at two strengths or more); only the
    panels that have something to show are drawn."""
    have_id = any(getattr(m.metrics.get("identity_similarity"), "available", False) for m in result.methods)
    have_ssim = any(getattr(m.metrics.get("ssim"), "available", False) for m in result.methods)
    curves = {
        name: {metric: pts for metric, pts in d.items() if len(pts) >= 2}
        for name, d in _curve_points(result).items()
    }
    curves = {k: v for k, v in curves.items() if v}
    panels = (["tradeoff"] if have_id and have_ssim else []) + (["curves"] if curves else [])
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    axes = dict(zip(panels, axes.flat, strict=True))
    if "tradeoff" in axes:
        ax = axes["tradeoff"]
        fams: dict[str, list[tuple[float, float, float | None]]] = {}
        for m in result.methods:
            ri, rs = m.metrics.get("identity_similarity"), m.metrics.get("ssim")
            if getattr(ri, "available", False) and getattr(rs, "available", False):
                name, s, _ = _family(m)
                fams.setdefault(name, []).append((float(rs.value), float(ri.value), s))
        for i, (name, pts) in enumerate(sorted(fams.items())):
            pts.sort(key=lambda p: (p[2] is None, p[2] or 0.0))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=f"C{i % 10}", label=name)
            for x, y, s in pts:
                if s is not None:
                    ax.annotate(f"{s:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlim(0.0, 1.02)
        ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
        ax.set_xlabel(axis_label(result, "ssim") + ", quality")
        ax.set_ylabel(axis_label(result, "identity_similarity") + ", privacy")
        ax.set_title("privacy-quality trade-off (labels: strength)", fontsize=9)
        ax.legend(fontsize=7)
    if "curves" in axes:
        ax = axes["curves"]
        metrics = set()
        for i, (name, d) in enumerate(sorted(curves.items())):
            for j, (metric, pts) in enumerate(sorted(d.items())):
                metrics.add(metric.split(" ")[0])
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    "o" + ("-" if j % 2 == 0 else "--"),
                    color=f"C{i % 10}",
                    ms=3,
                    label=f"{name}: {metric}",
                )
        ax.set_xscale("log")
        ax.set_xlabel("method strength (radius / block / beta ...), log scale")
        ax.set_ylabel("; ".join(axis_label(result, m) for m in sorted(metrics)), fontsize=7)
        if all(_bounds(m, None) for m in metrics):
            ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
        ax.set_title("metric over method strength", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    p = out_dir / "privacy_quality.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


# ------------------------------------------------------------------------------------------ writing


def write_report(result: BenchResult, out_dir: Path, plots: bool = True) -> dict[str, Path]:
    """Write results.json, per_image.csv, report.md and the plots into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    p = out_dir / "results.json"
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results_json(result), indent=2, ensure_ascii=False))
    tmp.replace(p)
    files["results"] = p
    files["per_image"] = write_per_image_csv(result, out_dir / "per_image.csv")
    pngs = make_plots(result, out_dir) if plots else []
    for png in pngs:
        files[png.stem] = png
    md = out_dir / "report.md"
    md.write_text(markdown(result, [str(x) for x in pngs]))
    files["report"] = md
    return files

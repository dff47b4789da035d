"""Paper 004 (Private-Encoder) tables side by side with ours: blur, mosaic (``pixelate``) and
de-identification (``deidentify``, any backend) on identity similarity, de-identification rate,
face detection rate (dlib HOG, the paper's utility measure), MSE, SSIM and FID, plus rank-1
re-identification (an attack the paper does not report) when it was measured.

:func:`paper004_tables` builds, from a :class:`~privacy_cli.bench.results.BenchResult`:

* ``"metrics"``: every method of the run at the setting it was given (no paper column: the paper reports
  these only for calibrated settings);
* one table per calibration target (``--calibrate identity:0.1,0.2,0.4`` = the paper's Tables 1-3,
  ``--calibrate ssim:0.65`` = Tables 4-5): each method at the strength found on the calibration
  subset, our value of every metric next to the paper's (FFHQ, CurricularFace judge) where the
  paper gives one. The paper's "Ours" row is its Private-Encoder; it is put next to our
  ``deidentify`` rows whatever their backend (the row names the backend).

The judge is stated with the tables: our recogniser (``--recognizer``; dlib offline) and its
threshold (paper 004's 0.19 for CurricularFace / ArcFace, else calibrated on the dataset), and the
paper's (CurricularFace IR-101, 0.19). Numbers from different judges are not directly comparable;
the ordering of the methods is.
"""

from __future__ import annotations

import math
from typing import Any

from .results import BenchResult

#: columns of the paper's tables, in order
COLUMNS = (
    "identity_similarity",
    "deid_rate",
    "detect_rate_dlib",
    "mse",
    "mse_region",
    "ssim",
    "ssim_region",
    "fid",
    "reid_rank1",
)
#: short headers for the terminal
SHORT = {
    "identity_similarity": "IdSim",
    "deid_rate": "DeID",
    "detect_rate_dlib": "Det",
    "mse": "MSE",
    "mse_region": "MSE(f)",
    "ssim": "SSIM",
    "ssim_region": "SSIM(f)",
    "fid": "FID",
    "reid_rank1": "Rank1",
}
#: our method name -> the paper's row name
FAMILY = {"blur": "Blur", "pixelate": "Mosaic", "deidentify": "Ours"}
PAPER_JUDGE = "CurricularFace IR-101, de-identification threshold 0.19 (FFHQ, 1024 px)"
PAPER_DETECTOR = "dlib HOG face detector"

#: Paper 004 Tables 1-3: MSE, SSIM, FID at identity similarity 0.1 / 0.2 / 0.4
PAPER_AT_IDENTITY: dict[float, dict[str, dict[str, float]]] = {
    0.1: {
        "Blur": {"mse": 0.12, "ssim": 0.50, "fid": 158.23},
        "Mosaic": {"mse": 0.42, "ssim": 0.40, "fid": 130.71},
        "Ours": {"mse": 0.04, "ssim": 0.63, "fid": 48.51},
    },
    0.2: {
        "Blur": {"mse": 0.05, "ssim": 0.60, "fid": 98.65},
        "Mosaic": {"mse": 0.10, "ssim": 0.46, "fid": 119.99},
        "Ours": {"mse": 0.03, "ssim": 0.66, "fid": 47.52},
    },
    0.4: {
        "Blur": {"mse": 0.03, "ssim": 0.65, "fid": 65.82},
        "Mosaic": {"mse": 0.05, "ssim": 0.54, "fid": 108.03},
        "Ours": {"mse": 0.03, "ssim": 0.69, "fid": 46.33},
    },
}
#: Paper 004 Tables 4-5: identity similarity (mean; std 0.11 / 0.04 / 0.08) and detection rate at SSIM 0.65
PAPER_AT_SSIM: dict[float, dict[str, dict[str, float]]] = {
    0.65: {
        "Blur": {"identity_similarity": 0.38, "detect_rate_dlib": 0.4575},
        "Mosaic": {"identity_similarity": 0.87, "detect_rate_dlib": 0.9818},
        "Ours": {"identity_similarity": 0.16, "detect_rate_dlib": 0.9999},
    }
}
_PAPER_TABLE = {
    ("identity_similarity", 0.1): "Table 1",
    ("identity_similarity", 0.2): "Table 2",
    ("identity_similarity", 0.4): "Table 3",
    ("ssim", 0.65): "Tables 4-5",
    ("ssim_region", 0.65): "Tables 4-5",
}


def _value(r: Any) -> float | None:
    if r is None or not getattr(r, "available", False) or r.value is None:
        return None
    v = float(r.value)
    return None if math.isnan(v) else v


def _paper(metric: str, value: float, columns: list[str]) -> dict[str, dict[str, float]]:
    """The paper's rows for a calibration target, keyed by our column names: its MSE / SSIM (of
    face crops) go next to our face-region values when the run has them."""
    table = PAPER_AT_IDENTITY if metric == "identity_similarity" else PAPER_AT_SSIM
    where = {n: f"{n}_region" if f"{n}_region" in columns else n for n in ("mse", "ssim")}
    for v, rows in table.items():
        if abs(v - value) < 1e-9:
            return {fam: {where.get(k, k): x for k, x in r.items()} for fam, r in rows.items()}
    return {}


def judge(result: BenchResult) -> dict[str, Any]:
    """Our identity judge and threshold, and the paper's."""
    thr = None
    for m in result.methods:
        r = m.metrics.get("deid_rate")
        if getattr(r, "available", False):
            thr = r.extra
            break
    statistic = (thr or {}).get("threshold_statistic")
    if thr is None:
        source = None
    elif statistic == "paper 004":
        source = "paper 004's 0.19"
    else:
        source = (
            f"calibrated: {statistic} cosine of {thr.get('threshold_n_pairs')} different-identity pairs "
            "of the originals (the paper's procedure)"
        )
    return {
        "recognizer": result.config.recognizer,
        "threshold": None if thr is None else thr.get("threshold"),
        "threshold_source": source,
        "detector": PAPER_DETECTOR,
        "paper": PAPER_JUDGE,
    }


def paper004_tables(result: BenchResult) -> dict[str, Any] | None:
    """The paper's tables with our values (see the module docstring); None when the run has none of
    blur, pixelate, deidentify or none of the paper's metrics."""
    methods = [m for m in result.methods if m.spec.name in FAMILY]
    columns = [c for c in COLUMNS if any(c in m.metrics for m in methods)]
    if not methods or not columns:
        return None
    calibrated = {c["label"] for t in (result.calibration or {}).get("targets", []) for c in t["methods"]}
    given = [m for m in methods if m.label not in calibrated]
    tables: list[dict[str, Any]] = []
    if given:
        tables.append(
            {
                "title": "Paper 004 metrics at the given settings",
                "paper_table": None,
                "target": None,
                "columns": columns,
                "rows": [
                    {
                        "method": m.spec.name,
                        "paper_method": FAMILY[m.spec.name],
                        "setting": m.label,
                        "ours": {c: _value(m.metrics.get(c)) for c in columns},
                        "paper": {},
                    }
                    for m in given
                ],
            }
        )
    for tgt in (result.calibration or {}).get("targets", []):
        paper = _paper(tgt["metric"], tgt["value"], columns)
        rows = []
        for c in tgt["methods"]:
            if c["method"] not in FAMILY:
                continue
            try:
                m = result.method(c["label"])
            except KeyError:
                continue
            fam = FAMILY[c["method"]]
            rows.append(
                {
                    "method": c["method"],
                    "paper_method": fam,
                    "setting": c["label"],
                    "strength": {c["option"]: c["strength"]},
                    "subset_value": c["achieved"],
                    "reached": c["reached"],
                    "ours": {col: _value(m.metrics.get(col)) for col in columns},
                    "paper": {col: v for col, v in paper.get(fam, {}).items() if col in columns},
                }
            )
        tables.append(
            {
                "title": f"At {tgt['label']}",
                "paper_table": _PAPER_TABLE.get((tgt["metric"], round(float(tgt["value"]), 4))),
                "target": {"metric": tgt["metric"], "value": tgt["value"]},
                "columns": columns,
                "rows": rows,
            }
        )
    return {"judge": judge(result), "tables": tables}


def _cell(v: float | None, name: str) -> str:
    if v is None:
        return "n/a"
    if name == "fid":
        return f"{v:.2f}"
    if name == "detect_rate_dlib":
        return f"{v:.4f}"
    return f"{v:.3f}"


def table_rows(table: dict[str, Any], short: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and text rows of one table: each metric as ``ours``, followed by ``paper`` when the
    paper reports it for this target. ``short``: terse headers for the terminal."""
    from .report import display

    cols = table["columns"]
    with_paper = [c for c in cols if any(c in r["paper"] for r in table["rows"])]
    name = (lambda c: SHORT.get(c, c)) if short else display
    header = ["Method", "Setting"]
    if table["target"] is not None:
        header.append("Subset" if short else "Subset value")
    for c in cols:
        header.append(name(c))
        if c in with_paper:
            header.append("paper" if short else f"{display(c)} (paper)")
    rows = []
    for r in table["rows"]:
        row = [r["paper_method"], r["setting"]]
        if table["target"] is not None:
            sub = "n/a" if r["subset_value"] is None else f"{r['subset_value']:.3f}"
            row.append(sub + ("" if r["reached"] else (" !" if short else " (not reached)")))
        for c in cols:
            row.append(_cell(r["ours"].get(c), c))
            if c in with_paper:
                row.append(_cell(r["paper"].get(c), c) if c in r["paper"] else "")
        rows.append(row)
    return header, rows


def judge_line(doc: dict[str, Any]) -> str:
    j = doc["judge"]
    thr = "n/a" if j["threshold"] is None else f"{j['threshold']:.3f} ({j['threshold_source']})"
    return (
        f"Identity judge here: {j['recognizer']}, de-identification threshold {thr}; detection: "
        f"{j['detector']}. Paper: {j['paper']}. Values from different judges are not directly "
        "comparable; the ordering of the methods is. The paper's Ours is Private-Encoder; our "
        "deidentify rows name their backend. The paper's images are face crops: its MSE / SSIM stand "
        "next to our face-region values (f) when measured. Paper MSE scale unstated (ours: RGB in [0, 1])."
    )

"""Calibrated comparison (Private-Encoder, paper 004, Tables 1-5).

Methods are not compared at arbitrary settings: each method's strength (blur radius, mosaic block,
de-identification beta, perturbation epsilon) is first tuned on a calibration subset until a target
is met - an identity similarity of 0.1 / 0.2 / 0.4 (equal privacy; the paper's Tables 1-3 then
compare MSE, SSIM and FID) or an SSIM of 0.65 (equal quality; Tables 4-5 compare identity
similarity and face detection rate). The paper's images are aligned face crops, so its SSIM is a
face SSIM; on photos where the face is a part of the frame, ``ssim-region:0.65`` (SSIM inside the
face regions) is the comparable target. The calibrated settings are then benchmarked on the whole
dataset with every metric.

The search assumes the target metric is monotone in the strength (it is for blur and mosaic, and by
construction for beta): the two ends of the range are evaluated, then the bracket is bisected (in
log space for radius / block) until the target is met within ``tolerance`` or ``steps`` run out.
Every evaluation goes through the bench runner, so it is cached like any other bench run.

A method's other options are kept while its strength is searched: ``deidentify:model=ksame,beta=0.2``
is calibrated as ``deidentify:model=ksame`` with ``beta`` varied (the given beta is only a label).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from .results import BenchResult
from .runner import BenchRunner
from .specs import MethodSpec

#: Target metric aliases accepted by ``--calibrate``.
TARGET_ALIASES = {
    "identity": "identity_similarity",
    "id": "identity_similarity",
    "identity_similarity": "identity_similarity",
    "ssim": "ssim",
    "ssim_region": "ssim_region",
    "face_ssim": "ssim_region",
}
#: The paper's targets, used when ``--calibrate identity`` / ``--calibrate ssim`` gives no value.
DEFAULT_TARGETS = {"identity_similarity": (0.1, 0.2, 0.4), "ssim": (0.65,), "ssim_region": (0.65,)}


@dataclass(frozen=True)
class StrengthParam:
    """The option that sets a method's strength and the range searched.

    option: keyword of the method (``radius``); lo / hi: search range; integer: whole values only;
    log: bisect in log space (sizes in pixels) rather than linearly (fractions such as beta).
    """

    option: str
    lo: float
    hi: float
    integer: bool = False
    log: bool = True

    def clip(self, v: float) -> float:
        v = min(max(v, self.lo), self.hi)
        return float(round(v)) if self.integer else round(v, 2)


#: Strength options of the methods privpix ships (others can :func:`register_strength`).
STRENGTH: dict[str, StrengthParam] = {
    "blur": StrengthParam("radius", 0.5, 64.0),
    "pixelate": StrengthParam("block", 2, 128, integer=True),
    "deidentify": StrengthParam("beta", 0.0, 1.0, log=False),
    "perturb": StrengthParam("epsilon", 0.5, 64.0),
}


def register_strength(method: str, param: StrengthParam) -> None:
    """Declare the strength option of ``method`` so it can be calibrated."""
    STRENGTH[method] = param


@dataclass(frozen=True)
class Target:
    """Calibration target: ``metric`` (``identity_similarity`` or ``ssim``) should equal ``value``."""

    metric: str
    value: float

    @property
    def label(self) -> str:
        name = {"identity_similarity": "identity similarity", "ssim_region": "SSIM (face region)"}.get(
            self.metric, self.metric.upper()
        )
        return f"{name} {self.value:g}"


def parse_targets(spec: str | Sequence[str]) -> list[Target]:
    """``"identity:0.1,0.2,0.4"``, ``"identity=0.2"``, ``"ssim=0.65"``, ``"identity"`` (the paper's
    0.1/0.2/0.4) or several separated by ``;`` -> targets. Raises UsageError on bad input."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    groups = [g.strip() for p in parts for g in p.split(";") if g.strip()]
    if not groups:
        raise UsageError("--calibrate needs a target, e.g. identity:0.1,0.2,0.4 or ssim:0.65")
    out: list[Target] = []
    for g in groups:
        sep = ":" if ":" in g else ("=" if "=" in g else None)
        name, vals = g.split(sep, 1) if sep else (g, "")
        metric = TARGET_ALIASES.get(name.strip().lower().replace("-", "_"))
        if metric is None:
            raise UsageError(f"--calibrate {g!r}: target metric must be identity, ssim or ssim-region")
        values: Sequence[float]
        if vals.strip():
            try:
                values = [float(v) for v in vals.split(",") if v.strip()]
            except ValueError:
                raise UsageError(f"--calibrate {g!r}: values must be numbers") from None
        else:
            values = DEFAULT_TARGETS[metric]
        for v in values:
            if not -1.0 <= v <= 1.0:
                raise UsageError(f"--calibrate {g!r}: {metric} targets lie in [-1, 1], got {v}")
            t = Target(metric, float(v))
            if t not in out:
                out.append(t)
    return out


@dataclass
class Calibration:
    """Result of tuning one method for one target on the calibration subset.

    strength: the chosen option value; achieved: the target metric at that strength on the subset;
    reached: |achieved - target| <= tolerance; evaluations: every (strength, metric) tried, in order.
    """

    method: str
    option: str
    target: Target
    strength: float
    achieved: float
    reached: bool
    evaluations: list[tuple[float, float]] = field(default_factory=list)
    #: the method with its other options (e.g. ``deidentify:model=ksame``); None = the bare method
    base: MethodSpec | None = None

    @property
    def spec(self) -> MethodSpec:
        return _at(self.base or MethodSpec(self.method), self.option, self.strength)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "base": (self.base or MethodSpec(self.method)).label,
            "option": self.option,
            "target": {"metric": self.target.metric, "value": self.target.value},
            "strength": self.strength,
            "label": self.spec.label,
            "achieved": _clean(self.achieved),
            "reached": self.reached,
            "evaluations": [[s, _clean(v)] for s, v in self.evaluations],
        }


def _at(base: MethodSpec, option: str, strength: float) -> MethodSpec:
    """``base`` with ``option`` set to ``strength`` (whole numbers as int, so labels read ``block=16``)."""
    v: Any = int(strength) if float(strength).is_integer() else strength
    return base.with_options(**{option: v})


def _base(method: str | MethodSpec, option: str) -> MethodSpec:
    """The method spec with its strength option removed (the searched one)."""
    spec = method if isinstance(method, MethodSpec) else MethodSpec(str(method))
    return MethodSpec(spec.name, tuple((k, v) for k, v in spec.options if k != option))


def _clean(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


class Calibrator:
    """Tunes methods on the first ``n`` items of a runner's dataset (see the module docstring).

    tolerance: accept when |metric - target| is at most this; steps: bisection steps after the two
    ends. ``on_eval(method, strength, value)`` is called after every evaluation (for progress).
    """

    def __init__(
        self,
        runner: BenchRunner,
        n: int = 8,
        tolerance: float = 0.02,
        steps: int = 8,
        on_eval: Callable[[str, float, float], None] | None = None,
    ) -> None:
        if n < 1:
            raise UsageError(f"--calibrate-n must be >= 1, got {n}")
        self.runner = runner
        self.n = n
        self.tolerance = tolerance
        self.steps = steps
        self.on_eval = on_eval
        self._memo: dict[tuple[str, str, float], float] = {}

    def subset(self) -> list[Any]:
        return self.runner.originals()[: self.n]

    def evaluate(self, method: str | MethodSpec, option: str, metric: str, strength: float) -> float:
        """Mean ``metric`` of ``method`` (a name, or a spec whose other options are kept) at
        ``option=strength`` over the calibration subset (NaN when it cannot be measured)."""
        spec = _at(_base(method, option), option, strength)
        key = (spec.label, metric, strength)
        if key in self._memo:
            return self._memo[key]
        saved = self.runner.config.metrics, self.runner.progress
        self.runner.config.metrics, self.runner.progress = (metric,), None
        try:
            res = self.runner.run_methods([spec], self.subset())[0]
        finally:
            self.runner.config.metrics, self.runner.progress = saved
        r = res.metrics.get(metric)
        if r is None or not getattr(r, "available", False):
            reason = getattr(r, "reason", "not measured")
            fetch = getattr(r, "fetch", None)
            raise UsageError(
                f"cannot calibrate {method} on {metric}: {reason}" + (f" (run: {fetch})" if fetch else "")
            )
        value = float(r.value)
        self._memo[key] = value
        if self.on_eval is not None:
            self.on_eval(spec.name, strength, value)
        return value

    def calibrate(
        self, method: str | MethodSpec, target: Target, param: StrengthParam | None = None
    ) -> Calibration:
        """Find the strength of ``method`` (a name, or a spec whose other options are kept) whose
        mean ``target.metric`` on the subset is closest to ``target.value``."""
        name = method.name if isinstance(method, MethodSpec) else str(method)
        param = param or STRENGTH.get(name)
        if param is None:
            known = ", ".join(sorted(STRENGTH))
            raise UsageError(f"cannot calibrate {name!r}: no strength option known (calibratable: {known})")
        base = _base(method, param.option)
        evals: list[tuple[float, float]] = []

        def f(s: float) -> float:
            s = param.clip(s)
            v = self.evaluate(base, param.option, target.metric, s)
            evals.append((s, v))
            return v

        lo, hi = param.clip(param.lo), param.clip(param.hi)
        f_lo, f_hi = f(lo), f(hi)
        best = min(evals, key=lambda e: abs(e[1] - target.value))
        # bracket: the target must lie between the values at the two ends
        if (f_lo - target.value) * (f_hi - target.value) > 0:
            return self._result(base, param, target, best, evals)
        for _ in range(self.steps):
            if abs(best[1] - target.value) <= self.tolerance:
                break
            if param.integer and hi - lo <= 1:
                break
            mid = math.sqrt(lo * hi) if (param.log and lo > 0) else (lo + hi) / 2
            mid = param.clip(mid)
            if mid in (lo, hi):
                if not param.integer:
                    break
                mid = lo + 1 if mid == lo else hi - 1
                if mid in (lo, hi):
                    break
            f_mid = f(mid)
            if (f_lo - target.value) * (f_mid - target.value) <= 0:
                hi, f_hi = mid, f_mid
            else:
                lo, f_lo = mid, f_mid
            best = min(evals, key=lambda e: abs(e[1] - target.value))
        return self._result(base, param, target, best, evals)

    def _result(
        self,
        base: MethodSpec,
        param: StrengthParam,
        target: Target,
        best: tuple[float, float],
        evals: list[tuple[float, float]],
    ) -> Calibration:
        return Calibration(
            method=base.name,
            option=param.option,
            target=target,
            strength=best[0],
            achieved=best[1],
            reached=abs(best[1] - target.value) <= self.tolerance,
            evaluations=evals,
            base=base if base.options else None,
        )


def calibrated_bench(
    runner: BenchRunner,
    methods: Sequence[str | MethodSpec],
    targets: Sequence[Target],
    n: int = 8,
    tolerance: float = 0.02,
    steps: int = 8,
    on_eval: Callable[[str, float, float], None] | None = None,
) -> BenchResult:
    """Calibrate every method for every target on the first ``n`` items, then bench the given
    settings and all calibrated settings on the whole dataset. The result's ``calibration`` holds,
    per target, each method's calibration and the label of its bench row."""
    bases: list[MethodSpec] = []
    for m in methods:
        spec = m if isinstance(m, MethodSpec) else MethodSpec(str(m))
        if spec.name not in STRENGTH:
            known = ", ".join(sorted(STRENGTH))
            raise UsageError(
                f"cannot calibrate {spec.name!r}: no strength option known (calibratable: {known})"
            )
        base = _base(spec, STRENGTH[spec.name].option)  # a sweep blur:radius=2/4 is one method here
        if base not in bases:
            bases.append(base)
    cal = Calibrator(runner, n, tolerance, steps, on_eval)
    per_target: list[dict[str, Any]] = []
    specs: list[MethodSpec] = [m for m in methods if isinstance(m, MethodSpec)]
    for t in targets:
        rows = []
        for m in bases:
            c = cal.calibrate(m, t)
            rows.append(c.to_json())
            if c.spec not in specs:
                specs.append(c.spec)
        per_target.append({"metric": t.metric, "value": t.value, "label": t.label, "methods": rows})
    result = runner.run(specs)
    result.calibration = {
        "subset": min(n, len(runner.originals())),
        "tolerance": tolerance,
        "steps": steps,
        "targets": per_target,
    }
    return result


def comparison_rows(
    result: BenchResult, target: dict[str, Any], metrics: Sequence[str]
) -> list[dict[str, Any]]:
    """Rows of a paper-style table for one calibration target: method, strength, the target metric on
    the subset and on the whole dataset, and ``metrics`` on the whole dataset."""
    rows = []
    for c in target["methods"]:
        try:
            m = result.method(c["label"])
        except KeyError:
            continue
        row: dict[str, Any] = {
            "method": c["method"],
            "strength": f"{c['option']}={c['strength']:g}",
            "subset": c["achieved"],
            "reached": c["reached"],
        }
        for name in metrics:
            r = m.metrics.get(name)
            row[name] = r
        rows.append(row)
    return rows

"""Coverage of a shard: did generation sample what was asked, and does every parameter matter?

:func:`coverage_report` reads a shard and returns a JSON-able report with

- ``parameters`` (synthetic shards): for every scenario parameter, the realised histogram of
  its sampled values (image values from ``images[].conditions``, object values from
  ``annotations[].attributes`` — annotated objects only, fully hidden ones are not in the
  shard) against the requested distribution: the mixture ``(1 - uniform_share) · params +
  uniform_share · uniform`` (for mixture params ``uniform_share · uniform + (1 - uniform_share)
  · Σ_k w_k · component_k``, weights normalised), with exact bin probabilities from the distributions' CDFs (the same
  laws :mod:`generator.sampling` draws from; a test checks them against ``sample_value``).
  Total-variation distance and a chi-square p-value; flagged when ``p < 0.001`` and
  ``TVD >= 0.05``, when values fall outside the support, or when values are not recorded;
- ``effects``: the "ignored parameter" check. Sampled values always match their own
  distribution, so a builder that silently ignores a parameter is caught by testing that the
  parameter moves the observable conditions it declares (``ParamSpec.conditions`` →
  ``ConditionSpec.column`` of conditions.parquet): Spearman for numeric parameters,
  Kruskal–Wallis for categoricals, at the condition's level (one row per image or per object).
  Flagged "no measurable effect" when some condition had enough data (>= 30 rows, the parameter
  spread over >= 2 values) and every tested condition gives ``p > 0.01``;
- ``mixture`` (mixture params only): per component, the images that drew from it
  (``mix_component``) against its expected share (binomial test, flagged when ``p < 0.001``);
- ``class_balance``: annotations per class, max/min ratio; flagged for an empty class or a
  ratio above ``max_class_ratio``;
- ``conditions``: histograms of recorded condition/attribute keys that are not scenario
  parameters (all of them for real or imported shards, which have no scenario).

``flags`` lists every finding in one line each; :func:`to_markdown` renders the report.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from scipy import stats

from generator.errors import ShardError, is_number
from generator.params import Distribution, GenerationParams
from generator.qc import require_coco
from generator.sampling import UNIFORM, numeric_law
from generator.scenario import ParamSpec, ScenarioSpec
from generator.shard import Shard
from generator.validation import first_error_line

P_MISMATCH = 1e-3
MIN_TVD = 0.05
MAX_INT_BINS = 20


def _num(x: Any) -> float | None:
    """JSON-safe float (NaN/inf → None), rounded to 6 significant decimals."""
    if x is None:
        return None
    x = float(x)
    return round(x, 6) if math.isfinite(x) else None


# ---------------------------------------------------------------------- expected distributions
def _edges(p: ParamSpec, n: int) -> np.ndarray:
    """Bin edges over the parameter's range: one bin per integer when few, else <= 10 bins."""
    assert p.range is not None  # ParamSpec validation guarantees it for numeric types
    lo, hi = p.range
    k = int(np.clip(n // 10, 2, 10))
    if p.type == "int":
        span = round(hi - lo) + 1
        if span <= MAX_INT_BINS:
            return np.arange(lo - 0.5, hi + 1.0, 1.0)
        return lo - 0.5 + np.round(np.linspace(0, span, k + 1))
    return np.linspace(lo, hi, k + 1) if hi > lo else np.array([lo - 0.5, hi + 0.5])


def expected_probs(p: ParamSpec, params: GenerationParams, name: str,
                   edges: np.ndarray | None = None) -> np.ndarray:
    """Probability of each bin (numeric: between ``edges``, outer bins open) or choice."""
    u = params.uniform_share
    parts = [((1 - u) * w, dists.get(name, UNIFORM)) for w, dists in params.mixture()]
    if not p.is_numeric:
        return sum((w * _choice_probs(p, d) for w, d in parts), u * _choice_probs(p, UNIFORM))
    assert edges is not None
    a = np.concatenate([[-np.inf], edges[1:-1]])
    b = np.concatenate([edges[1:-1], [np.inf]])
    probs = sum((w * numeric_law(p, d).mass(a, b) for w, d in parts), u * numeric_law(p, UNIFORM).mass(a, b))
    return probs / probs.sum()


def requested(params: GenerationParams, name: str) -> dict[str, Any]:
    """The requested distribution of one parameter as JSON: the distribution itself, or for
    mixture params ``{"mixture": [{"share", "distribution"}, …]}`` (uniform share first)."""
    if not params.is_mixture:
        return params.distributions.get(name, UNIFORM).model_dump(mode="json", exclude_none=True)
    u = params.uniform_share
    return {"mixture": [{"share": _num(u), "distribution": {"kind": "uniform"}}] + [
        {"share": _num((1 - u) * w), "distribution": d.get(name, UNIFORM).model_dump(mode="json", exclude_none=True)}
        for w, d in params.mixture()]}


def _choice_probs(p: ParamSpec, d: Distribution) -> np.ndarray:
    names = [str(c) for c in p.choices or []]
    if d.kind == "fixed":
        return np.array([float(c == str(d.value)) for c in names])
    if d.kind == "uniform":
        return np.full(len(names), 1.0 / len(names))
    w = np.array([(d.weights or {}).get(c, 0.0) for c in names], dtype=float)
    return w / w.sum()


# ---------------------------------------------------------------------- realised vs requested
def _chi2(obs: np.ndarray, exp_p: np.ndarray) -> float | None:
    """Chi-square p-value, pooling bins whose expected count is below 5; None when < 2 bins."""
    n = obs.sum()
    exp = exp_p * n
    small = exp < 5
    o = list(obs[~small]) + ([obs[small].sum()] if small.any() else [])
    e = list(exp[~small]) + ([exp[small].sum()] if small.any() else [])
    if len(e) >= 2 and e[-1] < 5 and small.any():  # pooled bin still small: merge into smallest
        j = int(np.argmin(e[:-1]))
        o[j] += o.pop()
        e[j] += e.pop()
    if len(e) < 2 or min(e) <= 0:
        return None
    return float(stats.chisquare(o, f_exp=np.array(e) * (sum(o) / sum(e))).pvalue)


def _param_values(coco: dict[str, Any], name: str, scope: str) -> tuple[list[Any], int]:
    rows = coco["images"] if scope == "image" else coco["annotations"]
    key = "conditions" if scope == "image" else "attributes"
    values = [r.get(key, {}).get(name) for r in rows]
    return [v for v in values if v is not None], sum(v is None for v in values)


def parameter_check(name: str, p: ParamSpec, params: GenerationParams,
                    coco: dict[str, Any]) -> dict[str, Any]:
    """Realised histogram of one parameter against its requested mixture distribution."""
    values, missing = _param_values(coco, name, p.scope)
    out: dict[str, Any] = {"name": name, "scope": p.scope, "type": p.type, "n": len(values),
                           "missing": missing, "flags": []}
    out["distribution"] = requested(params, name)
    if missing:
        out["flags"].append(f"value not recorded on {missing} {p.scope} records")
    if not values:
        return out
    if p.is_numeric:
        x = np.array([float(v) if isinstance(v, int | float) else np.nan for v in values])
        edges = _edges(p, len(values))
        lo, hi = p.range or (0.0, 0.0)
        inside = np.isfinite(x) & (x >= lo) & (x <= hi)
        outside = int((~inside).sum())
        obs = np.bincount(np.searchsorted(edges[1:-1], x[inside], side="right"),
                          minlength=len(edges) - 1).astype(float)
        labels = [f"[{_num(a)}, {_num(b)})" for a, b in itertools.pairwise(edges)]
        exp = expected_probs(p, params, name, edges)
    else:
        choices = [str(c) for c in p.choices or []]
        counts = Counter(str(v) for v in values)
        outside = sum(c for v, c in counts.items() if v not in choices)
        obs = np.array([counts.get(c, 0) for c in choices], dtype=float)
        labels, exp = choices, expected_probs(p, params, name)
    _compare(out, labels, obs, exp, outside)
    return out


def _compare(out: dict[str, Any], labels: list[str], obs: np.ndarray, exp: np.ndarray,
             outside: int) -> None:
    n = obs.sum()
    tvd = 0.5 * float(np.abs(obs / max(n, 1) - exp).sum())
    pval = _chi2(obs, exp) if n else None
    impossible = int(obs[exp <= 0].sum()) + outside
    out["histogram"] = [{"bin": lab, "observed": int(o), "expected": _num(e * n)}
                        for lab, o, e in zip(labels, obs, exp, strict=True)]
    out.update(tvd=_num(tvd), p_value=_num(pval), outside_support=impossible)
    if impossible:
        out["flags"].append(f"{impossible} values where the requested distribution has no mass")
    if pval is not None and pval < P_MISMATCH and tvd >= MIN_TVD:
        out["flags"].append(f"realised values do not match the requested distribution "
                            f"(TVD {tvd:.3f}, chi-square p = {pval:.2g})")


def uniform_mix_check(coco: dict[str, Any], share: float) -> dict[str, Any]:
    flags = [i.get("conditions", {}).get("uniform_mix") for i in coco["images"]]
    known = [bool(f) for f in flags if f is not None]
    out: dict[str, Any] = {"expected_share": share, "n": len(known), "flags": []}
    if known:
        k = sum(known)
        pval = float(stats.binomtest(k, len(known), share).pvalue) if 0 < share < 1 else None
        out.update(observed_share=_num(k / len(known)), p_value=_num(pval))
        wrong = (share == 0 and k > 0) or (share == 1 and k < len(known))
        if wrong or (pval is not None and pval < P_MISMATCH):
            out["flags"].append(f"uniform_mix share {k}/{len(known)} does not match "
                                f"uniform_share {share}")
    return out


def mixture_check(coco: dict[str, Any], params: GenerationParams) -> dict[str, Any] | None:
    """Images per mixture component (``mix_component``) against the requested shares."""
    if not params.is_mixture:
        return None
    shares = params.image_shares()[1:]
    seen = [i.get("conditions", {}).get("mix_component") for i in coco["images"]]
    known = [int(c) for c in seen if is_number(c)]
    out: dict[str, Any] = {"n": len(known), "components": [], "flags": []}
    for k, (name, share) in enumerate(shares):
        hits = sum(c == k for c in known)
        pval = float(stats.binomtest(hits, len(known), share).pvalue) if known and 0 < share < 1 else None
        out["components"].append({"component": name, "expected_share": _num(share), "images": hits,
                                  "p_value": _num(pval)})
        if (share == 0 and hits) or (pval is not None and pval < P_MISMATCH):
            out["flags"].append(f"component {name!r}: {hits}/{len(known)} images, expected share {share:.3f}")
    return out


# ---------------------------------------------------------------------- ignored parameters
def _effect_rows(df: Any, pcol: str, ccol: str, level: str, scope: str,
                 numeric: bool) -> tuple[Any, Any] | str:
    """(parameter values, condition values) at the condition's level, or why not testable."""
    import pandas as pd

    if level == "image":
        if scope == "object":
            if not numeric:
                return "object-level categorical parameter against an image-level condition"
            rows = df.groupby("image_id").agg(x=(pcol, "mean"), y=(ccol, "first"))
        else:
            rows = df.drop_duplicates("image_id").rename(columns={pcol: "x", ccol: "y"})
    else:
        rows = df[df["ann_id"].notna()] if "ann_id" in df else df.iloc[0:0]
        rows = rows.rename(columns={pcol: "x", ccol: "y"})
    rows = rows[["x", "y"]].dropna()
    y = pd.to_numeric(rows["y"], errors="coerce")
    keep = y.notna()
    return rows["x"][keep], y[keep]


def _effect_test(x: Any, y: Any, numeric: bool, min_n: int) -> dict[str, Any]:
    """Spearman (numeric) or Kruskal–Wallis (categorical) of condition ``y`` on parameter ``x``."""
    res: dict[str, Any] = {"n": len(x), "method": "spearman" if numeric else "kruskal"}
    if numeric:
        xs = x.astype(float)
        if len(x) < min_n or xs.nunique() < 2:
            return {**res, "status": "insufficient data"}
        if y.nunique() < 2:  # the parameter varies, the condition does not move at all
            return {**res, "status": "tested", "statistic": 0.0, "p_value": 1.0}
        r = stats.spearmanr(xs, y)
        return {**res, "status": "tested", "statistic": _num(r.statistic),
                "p_value": _num(r.pvalue)}
    groups = [g.to_numpy() for _, g in y.groupby(x.astype(str)) if len(g) >= 5]
    if len(x) < min_n or len(groups) < 2:
        return {**res, "status": "insufficient data"}
    if y.nunique() < 2:
        return {**res, "status": "tested", "statistic": 0.0, "p_value": 1.0}
    h = stats.kruskal(*groups)
    return {**res, "status": "tested", "statistic": _num(h.statistic), "p_value": _num(h.pvalue)}


def effect_check(name: str, spec: ScenarioSpec, params: GenerationParams, df: Any,
                 alpha: float = 0.01, min_n: int = 30) -> dict[str, Any]:
    """Does parameter ``name`` measurably move any of the conditions it declares?"""
    p = spec.parameters[name]
    out: dict[str, Any] = {"parameter": name, "conditions": list(p.conditions), "tests": [],
                           "flags": []}
    pcol = f"{'param' if p.scope == 'image' else 'obj'}.{name}"
    if not p.conditions:
        return {**out, "status": "not testable", "reason": "declares no conditions"}
    used = [d.get(name, UNIFORM) for w, d in params.mixture() if w > 0]
    if (params.uniform_share == 0 and all(d.kind == "fixed" for d in used)
            and len({str(d.value) for d in used}) == 1):
        return {**out, "status": "not testable", "reason": "fixed distribution"}
    if df is None or pcol not in df:
        return {**out, "status": "not testable", "reason": f"{pcol} not in conditions.parquet"}
    for cname in p.conditions:
        cs = spec.conditions[cname]
        test: dict[str, Any] = {"condition": cname, "column": cs.column, "level": cs.level}
        if cs.column not in df:
            out["tests"].append({**test, "status": "column not in conditions.parquet"})
            continue
        rows = _effect_rows(df, pcol, cs.column, cs.level, p.scope, p.is_numeric)
        if isinstance(rows, str):
            out["tests"].append({**test, "status": f"not testable: {rows}"})
            continue
        out["tests"].append({**test, **_effect_test(*rows, p.is_numeric, min_n)})
    tested = [t for t in out["tests"] if t["status"] == "tested"]
    if not tested:
        return {**out, "status": "insufficient data"}
    if all(t["p_value"] is None or t["p_value"] > alpha for t in tested):
        out["flags"].append("no measurable effect on " + ", ".join(
            f"{t['condition']} ({t['column']}, p = {t['p_value']})" for t in tested))
        return {**out, "status": "no measurable effect"}
    return {**out, "status": "ok"}


# ---------------------------------------------------------------------- balance and histograms
def class_balance(coco: dict[str, Any], max_ratio: float) -> dict[str, Any]:
    names = {c["id"]: c["name"] for c in coco["categories"]}
    counts = Counter(names.get(a["category_id"], f"id {a['category_id']}")
                     for a in coco["annotations"])
    full = {n: counts.get(n, 0) for n in names.values()} | dict(counts)
    out: dict[str, Any] = {"counts": full, "ratio": None, "flags": []}
    empty = [n for n, c in full.items() if c == 0]
    if empty:
        out["flags"].append(f"classes without annotations: {', '.join(map(str, empty))}")
    elif full:
        ratio = max(full.values()) / min(full.values())
        out["ratio"] = _num(ratio)
        if ratio > max_ratio:
            out["flags"].append(f"class imbalance: max/min = {ratio:.1f} > {max_ratio:g}")
    return out


def histogram(values: list[Any], bins: int = 10) -> list[dict[str, Any]]:
    """Counts per value (categorical or few numbers) or per equal-width bin (many numbers)."""
    nums = [v for v in values if is_number(v)]
    if len(nums) == len(values) and len(set(nums)) > MAX_INT_BINS:
        counts, edges = np.histogram(np.asarray(nums, dtype=float), bins=bins)
        return [{"bin": f"[{_num(a)}, {_num(b)}{']' if i == bins - 1 else ')'}", "count": int(c)}
                for i, (a, b, c) in enumerate(zip(edges[:-1], edges[1:], counts, strict=True))]
    keyed = Counter(json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else str(v)
                    for v in values)
    return [{"bin": k, "count": c} for k, c in sorted(keyed.items())]


def condition_histograms(coco: dict[str, Any], skip: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for level, rows, key in (("image", coco["images"], "conditions"),
                             ("object", coco["annotations"], "attributes")):
        found: dict[str, list[Any]] = {}
        for r in rows:
            for k, v in (r.get(key) or {}).items():
                if k not in skip and v is not None:
                    found.setdefault(k, []).append(v)
        for k, vals in sorted(found.items()):
            out[k] = {"level": level, "n": len(vals), "histogram": histogram(vals)}
    return out


# ---------------------------------------------------------------------- the report
def _scenario(shard: Shard) -> tuple[ScenarioSpec, GenerationParams] | None:
    """The scenario spec and params stored in a synthetic shard's manifest, or None."""
    scen, params = shard.manifest.get("scenario"), shard.manifest.get("params")
    if not (isinstance(scen, dict) and isinstance(scen.get("spec"), dict)
            and isinstance(params, dict)):
        return None
    try:
        return ScenarioSpec.model_validate(scen["spec"]), GenerationParams.model_validate(params)
    except ValidationError as exc:
        raise ShardError(first_error_line(exc, f"shard {shard.path} manifest scenario/params")
                         + "; the manifest was not written by this synthloop version") from exc


def _conditions_table(shard: Shard) -> Any:
    try:
        return shard.conditions()
    except (OSError, ValueError):  # missing or corrupt parquet: effects become "not testable"
        return None


def coverage_report(path: str | Path, max_class_ratio: float = 10.0, alpha: float = 0.01,
                    min_n: int = 30) -> dict[str, Any]:
    """Everything in the module docstring, as a JSON-able dict with a ``flags`` list."""
    shard = Shard(path)
    coco = require_coco(shard)
    report: dict[str, Any] = {
        "shard": str(shard.path), "name": shard.manifest.get("name"),
        "kind": shard.manifest.get("kind"), "n_images": len(coco["images"]),
        "n_annotations": len(coco["annotations"]), "scenario": None, "parameters": [],
        "effects": [], "uniform_mix": None,
    }
    found = _scenario(shard)
    skip: set[str] = set()
    if found is not None:
        spec, params = found
        df = _conditions_table(shard)
        report.update(scenario=spec.name, uniform_share=params.uniform_share)
        report["uniform_mix"] = uniform_mix_check(coco, params.uniform_share)
        mix = mixture_check(coco, params)
        if mix is not None:
            report["mixture"] = mix
        for name, p in spec.parameters.items():
            report["parameters"].append(parameter_check(name, p, params, coco))
            report["effects"].append(effect_check(name, spec, params, df, alpha, min_n))
        skip = set(spec.parameters) | {"uniform_mix", "mix_component"}
    report["class_balance"] = class_balance(coco, max_class_ratio)
    report["conditions"] = condition_histograms(coco, skip)
    report["flags"] = _collect_flags(report)
    report["ok"] = not report["flags"]
    return report


def _collect_flags(report: dict[str, Any]) -> list[str]:
    flags = [f"parameter {p['name']}: {f}" for p in report["parameters"] for f in p["flags"]]
    flags += [f"parameter {e['parameter']}: {f}" for e in report["effects"] for f in e["flags"]]
    flags += [f"uniform_mix: {f}" for f in (report["uniform_mix"] or {}).get("flags", [])]
    flags += [f"mixture: {f}" for f in (report.get("mixture") or {}).get("flags", [])]
    flags += [f"class balance: {f}" for f in report["class_balance"]["flags"]]
    return flags


def summary(report: dict[str, Any]) -> str:
    eff = Counter(e["status"] for e in report["effects"])
    bad = sum(bool(p["flags"]) for p in report["parameters"])
    ratio = report["class_balance"]["ratio"]
    return (f"coverage {report['shard']}: {len(report['parameters'])} parameters ({bad} flagged), "
            f"effects {eff.get('ok', 0)} ok / {eff.get('no measurable effect', 0)} no effect / "
            f"{eff.get('not testable', 0) + eff.get('insufficient data', 0)} untested, "
            f"class ratio {ratio if ratio is not None else 'n/a'}: "
            f"{len(report['flags'])} flags")


def to_markdown(report: dict[str, Any]) -> str:
    """A human-readable rendering of :func:`coverage_report`'s result."""
    lines = [f"# Coverage of `{report['name']}` ({report['kind']})", "",
             f"{report['n_images']} images, {report['n_annotations']} annotations; "
             f"scenario: {report['scenario'] or 'none (class balance and conditions only)'}.", ""]
    lines += ["## Flags", ""] + [f"- {f}" for f in report["flags"]] + (
        ["- none"] if not report["flags"] else []) + [""]
    if report["parameters"]:
        lines += ["## Parameters: realised vs requested", "",
                  "| parameter | scope | n | TVD | chi² p | flags |", "|---|---|---|---|---|---|"]
        lines += [f"| {p['name']} | {p['scope']} | {p['n']} | {p.get('tvd')} | "
                  f"{p.get('p_value')} | {'; '.join(p['flags']) or '–'} |"
                  for p in report["parameters"]]
        lines += ["", "## Parameter effects on declared conditions", "",
                  "| parameter | status | tests |", "|---|---|---|"]
        for e in report["effects"]:
            tests = "; ".join(f"{t['column']}: {t['status']}" + (
                f" ({t['method']} {t['statistic']}, p = {t['p_value']})"
                if t["status"] == "tested" else "") for t in e["tests"])
            lines.append(f"| {e['parameter']} | {e['status']} | {tests or e.get('reason', '–')} |")
        lines.append("")
    if report.get("mixture"):
        lines += ["## Mixture components: images drawn vs requested", "",
                  "| component | expected share | images | binomial p |", "|---|---|---|---|"]
        lines += [f"| {c['component']} | {c['expected_share']} | {c['images']} | {c['p_value']} |"
                  for c in report["mixture"]["components"]] + [""]
    cb = report["class_balance"]
    lines += ["## Class balance", "", f"max/min ratio: {cb['ratio']}", "",
              "| class | annotations |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in cb["counts"].items()] + [""]
    if report["conditions"]:
        lines += ["## Other recorded conditions", ""]
        for k, h in report["conditions"].items():
            bins = ", ".join(f"{b['bin']}: {b['count']}" for b in h["histogram"])
            lines.append(f"- **{k}** ({h['level']}, n = {h['n']}): {bins}")
    return "\n".join(lines) + "\n"

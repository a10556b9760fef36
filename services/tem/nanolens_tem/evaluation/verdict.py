"""Fitting and checking the verdict of :mod:`nanolens_tem.science.quality` on results with ground truth.

``python -m nanolens_tem.evaluation.verdict [--out build/tem_verdict] [--quick]``

1. **Results with ground truth**: the shipped CNN (the default method) on

   - the real labelled sets in ``$NANOLENS_DATA`` (gold crystals, soot aggregates, metal powder,
     steel spheroidite), each as published and rescaled (the truth's diameters scaled with it);
   - synthetic images (held-out test seeds) over scale, noise, blur and film texture, faceted
     crystals, and images analysed with the wrong particle polarity;
   - blanks (an empty film) and noise, whose truth is "no particles".

   Per result: its GMD against the truth's (equivalent-circle diameters of the masks; the
   generator's true diameters), and the signals of :func:`nanolens_tem.science.quality.measure`.
   Results are cached one per line in ``OUT/rows.jsonl``.
2. **Verdict**: a result is *wrong* when its GMD is off by more than 20 % (or it found particles
   where there are none) and *right* when within 10 %. Thresholds are fitted greedily (one per
   signal, each added where it flags the most wrong results per right one, while at most
   ``budget`` of the right ones are flagged; every set weighs the same).
3. **Check**: leave one set out: fit on all other sets, judge the held-out set; the pooled rates
   are reported against the goals (>= 90 % of wrong results flagged, <= 10 % of right ones).
   The shipped thresholds are the fit on every set.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nanolens_tem.evaluation.data import data_root, gold_instances, gold_items, read_gray, row_cache
from nanolens_tem.evaluation.metrics import drop_small, equivalent_diameters
from nanolens_tem.evaluation.splits import TEST_SEED0, eval_params, eval_params_faceted
from nanolens_tem.science import quality
from nanolens_tem.science.cnn import resample
from nanolens_tem.science.segmentation import geometric_stats
from nanolens_tem.synthetic.agglomerates import generate
from nanolens_tem.synthetic.faceted import generate_faceted

WRONG, RIGHT = 0.20, 0.10
#: signal -> kinds of threshold the fit may place on it (see quality.THRESHOLDS)
CANDIDATES = {"contrast_to_noise": "min", "coverage": "max", "count": "min", "gmd_px": "min",
              "edge_fraction": "max", "faint_fraction": "max", "outline_ratio": "band", "classical_ratio": "band",
              "classical_count_ratio": "band", "half_scale_ratio": "band"}
#: seeds of this evaluation's synthetic images: the test split, past the ranges evaluate.py uses
SEED0 = TEST_SEED0 + 500_000


@dataclass(frozen=True)
class Case:
    """One image to analyse: ``load() -> (image, bright_particles, true diameters or None for "none")``."""

    id: str
    group: str
    load: Callable[[], tuple[np.ndarray, bool, np.ndarray | None]]


def _gray(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("L"))


def _scaled(image: np.ndarray, truth: np.ndarray | None, factor: float) -> tuple[np.ndarray, np.ndarray | None]:
    if factor == 1:
        return image, truth
    shape = (round(image.shape[0] * factor), round(image.shape[1] * factor))
    out = np.clip(resample(image.astype(np.float32), shape), 0, 255).astype(np.uint8)
    return out, None if truth is None else truth * factor


def real_cases(factors: dict[str, tuple[float, ...]]) -> Iterator[Case]:
    """The labelled real sets, each image at every factor of its set."""
    root = data_root()

    def case(group, name, factor, loader):
        def load():
            image, bright, truth = loader()
            image, truth = _scaled(image, truth, factor)
            return image, bright, truth
        return Case(f"{group}/{name}@{factor:g}", group, load)

    for factor in factors["gold"]:
        for _, image, mask in gold_items():
            yield case("gold", image.stem, factor, lambda image=image, mask=mask: (
                read_gray(image), False, equivalent_diameters(drop_small(gold_instances(mask, 2), 20))))
    soot = root / "tem" / "sage_soot_tem"
    for factor in factors["soot"]:
        for image in sorted((soot / "images").glob("*.png")):
            def load(image=image):
                masks = sorted((soot / "masks" / "per_instance").glob(f"mask_{image.stem.split('_')[1]}_*.png"))
                areas = np.array([(_gray(m) > 127).sum() for m in masks], float)
                return _gray(image), False, 2 * np.sqrt(areas[areas > 0] / np.pi)
            yield case("soot", image.stem, factor, load)
    ampis = root / "sem" / "ampis_powder_sem"
    for factor in factors["ampis"]:
        for image in sorted((ampis / "images").glob("*.png")):
            yield case("ampis", image.stem, factor, lambda image=image: (
                _gray(image), True,
                equivalent_diameters(read_gray(ampis / "masks" / f"{image.stem}_particles.png").astype(np.int64))))
    uhcs = root / "sem" / "uhcs_spheroidite_sem"
    for factor in factors["uhcs"]:
        for image in sorted((uhcs / "images").glob("*.png")):
            def load(image=image):
                from skimage.measure import label

                return _gray(image), True, equivalent_diameters(label(read_gray(uhcs / "masks" / image.name) > 127,
                                                                      connectivity=2))
            yield case("uhcs", image.stem, factor, load)


def synthetic_cases(n: int) -> Iterator[Case]:
    """Synthetic conditions, ``n`` images each (fewer for the slow large ones), and blanks and noise."""
    base = eval_params()
    conditions = {
        "default": lambda s: base,
        "tiny": lambda s: dataclasses.replace(base, gmd=(3.0, 8.0), d_min=2.0),
        "large": lambda s: dataclasses.replace(base, shape=(512, 512), gmd=(50.0, 110.0), d_max=250.0),
        "noisy": lambda s: dataclasses.replace(base, dose=float(np.random.default_rng(s).uniform(3, 30))),
        "blurred": lambda s: dataclasses.replace(base, psf_sigma=float(np.random.default_rng(s).uniform(2.5, 6))),
        "textured": lambda s: dataclasses.replace(base, film_texture=float(np.random.default_rng(s).uniform(.12, .3)),
                                                  film_grain=float(np.random.default_rng(s).uniform(1.5, 4))),
    }
    for k, (name, params) in enumerate(conditions.items()):
        for i in range(n if name != "large" else max(1, n // 2)):
            seed = SEED0 + 1000 * k + i
            yield Case(f"synthetic-{name}/{seed}", f"synthetic-{name}", lambda seed=seed, params=params: (
                (lambda s: (s.image, False, s.diameters))(generate(seed, params(seed)))))
    for i in range(n):
        seed = SEED0 + 10_000 + i
        yield Case(f"synthetic-faceted/{seed}", "synthetic-faceted", lambda seed=seed: (
            (lambda s: (s.image, False, s.diameters))(generate_faceted(seed, eval_params_faceted()))))
        # the wrong polarity: dark particles analysed as bright ones
        yield Case(f"synthetic-polarity/{seed}", "synthetic-polarity", lambda seed=seed: (
            (lambda s: (s.image, True, s.diameters))(generate(seed, base))))
        yield Case(f"blank/{seed}", "blank", lambda seed=seed: (
            generate(seed, dataclasses.replace(base, max_agglomerates=0)).image, False, None))
        yield Case(f"noise/{seed}", "noise", lambda seed=seed: (_noise(seed), bool(seed % 2), None))


def _noise(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if seed % 4 < 2:
        return rng.integers(0, 256, (384, 384)).astype(np.uint8)
    return np.clip(rng.normal(128, 30, (384, 384)), 0, 255).astype(np.uint8)


def analyse(case: Case, cnn) -> dict:
    """The CNN's result on one case, its signals and its error against the truth."""
    image, bright, truth = case.load()
    seg = cnn.segment(image, dark_particles=not bright)
    others = quality.cross_check(image, lambda im: cnn.segment(im, dark_particles=not bright), not bright)
    signals = quality.measure(image, np.asarray(seg.labels), seg.diameters, seg.weights, **others)
    true_gmd = geometric_stats(truth)[0] if truth is not None and len(truth) else math.nan
    return {"id": case.id, "group": case.group, "shape": list(image.shape), "bright": bright,
            "true_count": None if truth is None else len(truth), "true_gmd": true_gmd,
            "gmd": signals.gmd_px, "error": signals.gmd_px / true_gmd - 1 if true_gmd > 0 else math.nan,
            "signals": signals.as_dict()}


def outcome(row: dict) -> str:
    """``wrong``, ``right``, ``between`` (10-20 % off), or ``empty`` (no particles found)."""
    if row["signals"]["count"] == 0:
        return "empty"
    if row["true_count"] is None:
        return "wrong"  # particles where there are none
    error = abs(row["error"])
    return "wrong" if error > WRONG else "right" if error <= RIGHT else "between"


def flags(rows: list[dict], thresholds: dict) -> np.ndarray:
    return np.array([bool(quality.judge(_signals(r), thresholds)) for r in rows])


def _signals(row: dict) -> quality.Signals:
    s = dict(row["signals"])
    s["count"] = int(s["count"])
    return quality.Signals(**s)


def fit(rows: list[dict], budget: float = 0.04) -> dict[str, tuple[str, float]]:
    """Thresholds, one per signal at most, added greedily (see the module docstring)."""
    rows = [r for r in rows if outcome(r) in ("wrong", "right")]
    wrong = np.array([outcome(r) == "wrong" for r in rows])
    groups = [r["group"] for r in rows]
    # every set weighs the same, among the wrong and among the right results
    weight = np.zeros(len(rows))
    for mask in (wrong, ~wrong):
        sets = {g for g, m in zip(groups, mask, strict=True) if m}
        for g in sets:
            members = np.array([gg == g for gg in groups]) & mask
            weight[members] = 1 / (members.sum() * len(sets))
    values = {name: np.array([r["signals"][name] for r in rows], float) for name in CANDIDATES}
    chosen: dict[str, tuple[str, float]] = {}
    flagged = np.zeros(len(rows), bool)
    while True:
        best = None
        for name, kind in CANDIDATES.items():
            if name in chosen:
                continue
            v = values[name]
            finite = v[~np.isnan(v)]
            if kind == "band":
                finite = np.exp(np.abs(np.log(finite[finite > 0])))
            levels = np.unique(finite)
            # thresholds halfway between neighbouring values (geometric for ratios): a margin both ways
            between = np.sqrt(levels[1:] * levels[:-1]) if kind == "band" else (levels[1:] + levels[:-1]) / 2
            for t in between:
                t = float(f"{t:.3g}")
                hit = _beyond(kind, t, v)
                f = flagged | hit
                caught, false = weight[f & wrong].sum(), weight[f & ~wrong].sum()
                gain = caught - weight[flagged & wrong].sum()
                if false > budget or gain <= 1e-9:
                    continue
                cost = false - weight[flagged & ~wrong].sum()
                score = gain - 2 * cost
                if best is None or score > best[0]:
                    best = (score, name, kind, t, f)
        if best is None:
            return chosen
        _, name, kind, t, flagged = best
        chosen[name] = (kind, t)


def _beyond(kind: str, t: float, v: np.ndarray) -> np.ndarray:
    """:func:`nanolens_tem.science.quality.beyond` over an array."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "min":
            return v < t
        if kind == "max":
            return v > t
        return (v <= 0) | (np.abs(np.log(v)) > np.log(t))


def rates(rows: list[dict], flagged: np.ndarray) -> dict:
    """Flagged shares of the wrong and the right results, with their counts."""
    out = {}
    for kind in ("wrong", "right", "between", "empty"):
        members = np.array([outcome(r) == kind for r in rows])
        out[kind] = {"n": int(members.sum()), "flagged": int((flagged & members).sum())}
    return out


def leave_one_set_out(rows: list[dict], budget: float) -> tuple[np.ndarray, dict]:
    """Each set judged by thresholds fitted on all the others."""
    flagged = np.zeros(len(rows), bool)
    fitted = {}
    for group in sorted({r["group"] for r in rows}):
        train = [r for r in rows if r["group"] != group]
        held = np.array([r["group"] == group for r in rows])
        fitted[group] = fit(train, budget)
        flagged[held] = flags([r for r in rows if r["group"] == group], fitted[group])
    return flagged, fitted


def collect(out: Path, cases: list[Case], cnn) -> list[dict]:
    """Rows for ``cases``, analysing only those not yet in ``out/rows.jsonl``."""
    with row_cache(out) as (done, record):
        for case in cases:
            if case.id not in done:
                record(analyse(case, cnn))
                print(case.id, outcome(done[case.id]), f"{done[case.id]['error']:+.2f}", flush=True)
    return [done[c.id] for c in cases]


def report(rows: list[dict], flagged: np.ndarray, shipped: dict) -> str:
    """Per set, the held-out verdict's flags among wrong and right results; then the pooled rates
    held out and of the shipped thresholds on the data they were fitted on."""
    lines = ["| set | results | wrong (> 20 % off) | flagged | right (<= 10 %) | flagged | between | no particles |",
             "|---|---|---|---|---|---|---|---|"]
    for group in sorted({r["group"] for r in rows}) + ["all"]:
        sel = np.array([group in ("all", r["group"]) for r in rows])
        rr = rates([r for r, s in zip(rows, sel, strict=True) if s], flagged[sel])
        lines.append(f"| {group} | {int(sel.sum())} | {rr['wrong']['n']} | {rr['wrong']['flagged']} | "
                     f"{rr['right']['n']} | {rr['right']['flagged']} | {rr['between']['n']} | {rr['empty']['n']} |")
    lines.append("")
    for name, f in (("held out (each set judged by thresholds fitted on the others)", flagged),
                    ("shipped thresholds, in sample", flags(rows, shipped))):
        rr = rates(rows, f)
        w, r = rr["wrong"], rr["right"]
        lines.append(f"- {name}: wrong flagged {w['flagged']} of {w['n']} ({w['flagged'] / max(w['n'], 1):.0%}, "
                     f"goal >= 90 %), right flagged {r['flagged']} of {r['n']} ({r['flagged'] / max(r['n'], 1):.0%}, "
                     "goal <= 10 %)")
    lines += ["", "Shipped thresholds (fit on every set): "
              + ", ".join(f"{k} {kind} {t:g}" for k, (kind, t) in shipped.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("build/tem_verdict"))
    ap.add_argument("--cnn", type=Path, default=Path(__file__).resolve().parents[1] / "bundles" / "tem-unet" / "1.5.0")
    ap.add_argument("--n-synthetic", type=int, default=12, help="images per synthetic condition")
    ap.add_argument("--budget", type=float, default=0.04, help="largest flagged share of right results in a fit")
    args = ap.parse_args(argv)
    from nanolens_tem.science.cnn import CnnSegmenter

    cnn = CnnSegmenter.from_bundle(args.cnn, threads=1)
    factors = {"gold": (1, 0.5, 2), "soot": (0.25, 0.5, 1), "ampis": (0.5, 1), "uhcs": (1, 2)}
    cases = [*real_cases(factors), *synthetic_cases(args.n_synthetic)]
    rows = collect(args.out, cases, cnn)
    flagged, _ = leave_one_set_out(rows, args.budget)
    shipped = fit(rows, args.budget)
    text = report(rows, flagged, shipped)
    (args.out / "verdict.md").write_text(text + "\n")
    (args.out / "verdict.json").write_text(json.dumps({"thresholds": shipped, "rates": rates(rows, flagged)}))
    print(text)


if __name__ == "__main__":
    main()

"""How well a spectra model's out-of-domain verdict separates foreign spectra from its own kind.

    python -m nanolens_spectra.evaluation.ood [--bundle DIR] [--data DIR] [--out results.json]

In domain: fresh synthetic DNA-SWCNT spectra (``generate_spectra``, a seed the shipped model was
not trained on). Foreign: every measured set of the shared data folder (ramanbiolib's
biomolecules, rampy's basalt glasses, chemotools' coffee and fermentation infrared spectra) and
seeded random noise of four kinds on the model's own axis. Each spectrum goes through what
serving runs: the bundle's preprocessing, then its ONNX graph.

Two verdicts are scored:

- **served**: what a user gets. A spectrum whose axis covers too little of the model's is refused
  (INVALID_ARGUMENT, no class), which counts as flagged; the others are flagged when
  ``ood_score`` > 1.
- **score alone**: the axis check switched off (``min_overlap`` 1 %: the spectrum is extended
  with its edge values), so that the score is measured on every foreign spectrum and not hidden
  behind the refusal.

For each: the share of foreign spectra flagged (goal >= 90 %), the share of in-domain spectra
flagged (goal <= 5 %), and the AUROC of the score between the two (goal >= 0.98; a refused
spectrum scores +inf). ``DIR`` defaults to $NANOLENS_DATA, else ``<repo>/../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from nanolens_spectra.bundles import default_bundle_path
from nanolens_spectra.evaluation.data import (
    CHEMOTOOLS_DIR,
    RAMANBIOLIB_DIR,
    RAMPY_DIR,
    Spectra,
    data_root,
    read_matrix_csv,
    read_ramanbiolib,
    read_rampy_glasses,
)
from nanolens_spectra.science.preprocessing import PreprocessParams, preprocess
from nanolens_spectra.synthetic.swcnt import generate_spectra

IN_DOMAIN_SEED = 777  # the shipped model trained on seed 2021
N_IN_DOMAIN_PER_CLASS = 300
NOISE_SEED = 0
N_NOISE = 250  # of each kind
FERMENTATION_EVERY = 8  # 1629 on-line spectra of one process: every 8th (204) is plenty
ANY_OVERLAP = 0.01  # the axis check off: 1 % of the model axis is enough
GOALS = {"auroc": 0.98, "foreign_flagged": 0.90, "in_domain_flagged": 0.05}


class Scorer:
    """A bundle's preprocessing and ONNX graph, as the service runs them (one thread)."""

    def __init__(self, bundle_dir: Path):
        bundle_dir = Path(bundle_dir)
        manifest = json.loads((bundle_dir / "manifest.json").read_text())
        self.name = f"{manifest['name']}/{manifest['version']}"
        self.params = PreprocessParams.from_dict(manifest["preprocessing"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(bundle_dir / "model.onnx"), opts,
                                            providers=["CPUExecutionProvider"])

    def scores(self, data: Spectra, check_axis: bool = True) -> np.ndarray:
        """``ood_score`` of every spectrum; +inf for all when the preprocessing refuses the axis
        (only with ``check_axis``)."""
        params = self.params if check_axis else replace(self.params, min_overlap=ANY_OVERLAP)
        try:
            x = preprocess(data.spectra, data.axis, params)
        except ValueError:
            if not check_axis:
                raise
            return np.full(len(data.spectra), np.inf)
        return self.session.run(["ood_score"], {"spectra": x})[0].astype(np.float64)


def noise(axis: np.ndarray, n: int = N_NOISE, seed: int = NOISE_SEED) -> dict[str, Spectra]:
    """Four kinds of random spectra on ``axis``: white Gaussian counts, Poisson (shot) noise on a
    flat level, a random walk (drifting dark current), and uniform [0, 1)."""
    rng = np.random.default_rng(seed)
    c = axis.size
    kinds = {
        "gaussian": 100 + rng.normal(0, 10, (n, c)),
        "poisson": rng.poisson(1000, (n, c)).astype(np.float64),
        "random walk": 1000 + np.cumsum(rng.normal(0, 5, (n, c)), axis=1),
        "uniform": rng.random((n, c)),
    }
    return {f"noise: {k}": Spectra(v.astype(np.float32), axis, tuple(f"{k}:{i}" for i in range(n)))
            for k, v in kinds.items()}


def foreign_sets(data_dir: Path) -> dict[str, tuple[str, list[Spectra]]]:
    """Name -> (what it is, its spectra in groups sharing one axis) for every measured set."""
    data_dir = Path(data_dir)
    bio, _ = read_ramanbiolib(data_dir)
    chemo = data_dir / CHEMOTOOLS_DIR
    return {
        "ramanbiolib": (f"{RAMANBIOLIB_DIR}: Raman of biomolecules, 450-1800 cm^-1, smoothed and baseline-corrected",
                        [bio]),
        "rampy glasses": (f"{RAMPY_DIR}: raw Raman of basalt glasses, 25-1500 cm^-1",
                          read_rampy_glasses(data_dir)),
        "coffee (IR)": (f"{CHEMOTOOLS_DIR}/coffee_spectra.csv: ATR-FTIR; the axis is the channel index 0-1840",
                        [read_matrix_csv(chemo / "coffee_spectra.csv")]),
        "fermentation (IR)": (f"{CHEMOTOOLS_DIR}/fermentation_spectra.csv: mid-IR, 428-1833 cm^-1, every "
                              f"{FERMENTATION_EVERY}th", [read_matrix_csv(chemo / "fermentation_spectra.csv",
                                                                          FERMENTATION_EVERY)]),
    }


def auroc(negative: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a positive (foreign) score exceeds a negative (in-domain) one, ties
    counting half (the Mann-Whitney form of the area under the ROC curve)."""
    neg, pos = np.sort(np.asarray(negative, float)), np.asarray(positive, float)
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    return float((below + 0.5 * ties).sum() / (neg.size * pos.size))


@dataclass(frozen=True)
class SetResult:
    name: str
    source: str
    served: np.ndarray  # scores, +inf where refused
    alone: np.ndarray  # scores with the axis check off

    def row(self) -> dict[str, Any]:
        refused = np.isinf(self.served)
        return {"set": self.name, "source": self.source, "n": int(self.served.size),
                "refused_axis": int(refused.sum()),
                "served_flagged": int((self.served > 1).sum()),
                "score_alone_flagged": int((self.alone > 1).sum()),
                "score_alone_median": round(float(np.median(self.alone)), 3),
                "score_alone_min": round(float(self.alone.min()), 3)}


def _summary(in_domain: np.ndarray, foreign: np.ndarray) -> dict[str, float]:
    return {"auroc": round(auroc(in_domain, foreign), 4),
            "foreign_flagged": round(float((foreign > 1).mean()), 4),
            "in_domain_flagged": round(float((in_domain > 1).mean()), 4)}


def evaluate(bundle_dir: Path, data_dir: Path, n_per_class: int = N_IN_DOMAIN_PER_CLASS,
             n_noise: int = N_NOISE) -> dict[str, Any]:
    """Every set scored, per-set rows and the pooled served and score-alone summaries."""
    scorer = Scorer(bundle_dir)
    syn = generate_spectra(n_per_class, IN_DOMAIN_SEED)
    in_domain = scorer.scores(Spectra(syn.spectra, syn.axis, ()))
    sets = dict(foreign_sets(data_dir))
    sets.update({k: ("seeded numpy noise on the model's axis", [v])
                 for k, v in noise(scorer.params.model_axis(), n_noise).items()})
    results = []
    for name, (source, groups) in sets.items():
        served = np.concatenate([scorer.scores(g) for g in groups])
        alone = np.concatenate([scorer.scores(g, check_axis=False) for g in groups])
        results.append(SetResult(name, source, served, alone))
    served = np.concatenate([r.served for r in results])
    alone = np.concatenate([r.alone for r in results])
    return {
        "model": scorer.name,
        "in_domain": {"source": f"generate_spectra(n_per_class={n_per_class}, seed={IN_DOMAIN_SEED})",
                      "n": int(in_domain.size), "flagged": int((in_domain > 1).sum()),
                      "score_median": round(float(np.median(in_domain)), 3)},
        "sets": [r.row() for r in results],
        "served": {**_summary(in_domain, served), "n_foreign": int(served.size)},
        "score_alone": {**_summary(in_domain, alone), "n_foreign": int(alone.size)},
        "goals": GOALS,
    }


def format_table(result: dict[str, Any]) -> str:
    """Markdown: one row per foreign set, then the pooled figures beside their goals."""
    lines = ["| set | N | refused (axis) | flagged, served | flagged, score alone | median score alone |",
             "|---|---|---|---|---|---|"]
    for r in result["sets"]:
        lines.append(f"| {r['set']} | {r['n']} | {r['refused_axis']} | {r['served_flagged']} | "
                     f"{r['score_alone_flagged']} | {r['score_alone_median']:g} |")
    d = result["in_domain"]
    lines += ["", f"In domain: {d['flagged']} of {d['n']} flagged (median score {d['score_median']:g}).", "",
              "| verdict | AUROC | foreign flagged | in-domain flagged |", "|---|---|---|---|"]
    for key in ("served", "score_alone"):
        s = result[key]
        lines.append(f"| {key.replace('_', ' ')} ({s['n_foreign']} foreign) | {s['auroc']:.4f} | "
                     f"{100 * s['foreign_flagged']:.1f} % | {100 * s['in_domain_flagged']:.1f} % |")
    g = result["goals"]
    lines.append(f"| goal | >= {g['auroc']} | >= {100 * g['foreign_flagged']:.0f} % | "
                 f"<= {100 * g['in_domain_flagged']:.0f} % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=default_bundle_path(), help="model bundle directory")
    parser.add_argument("--data", type=Path, default=None, help="data folder (default $NANOLENS_DATA "
                        "or <repo>/../shared/data)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    data_dir = args.data or data_root()
    if not (data_dir / "spectra").is_dir():
        print(f"error: {data_dir / 'spectra'} not found (set --data or NANOLENS_DATA)", file=sys.stderr)
        return 2
    result = evaluate(args.bundle, data_dir)
    print(format_table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training of the Frei & Kruis ANNs on synthetic agglomerates (torch), export to an ONNX bundle.

``python -m nanolens_tem.training.ann_train --out DIR [--n-images 800]``

Samples are agglomerates of synthetic images (1-5 particles each) whose Otsu segment matches
exactly one ground-truth agglomerate. Split 70/15/15 by agglomerate (seeded); early stopping on
the validation part; the test part gives the metrics in the manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nanolens_tem.evaluation.splits import TRAIN_SEED0
from nanolens_tem.science.ann import HIDDEN, MAX_COUNT, transform_features
from nanolens_tem.science.features import FEATURE_NAMES, agglomerate_features, segment_agglomerates
from nanolens_tem.synthetic.agglomerates import SynthParams, generate


class AnnNet(nn.Module):
    """Classifier 13 -> 39 tanh -> 5 logits, and per-count regressors 13 -> h_n tanh -> n."""

    def __init__(self):
        super().__init__()
        n_in = len(FEATURE_NAMES)
        self.cls = nn.Sequential(nn.Linear(n_in, 39), nn.Tanh(), nn.Linear(39, MAX_COUNT))
        self.reg = nn.ModuleList([nn.Sequential(nn.Linear(n_in, h), nn.Tanh(), nn.Linear(h, n + 1))
                                  for n, h in enumerate(HIDDEN)])

    def forward(self, x: torch.Tensor):
        outs = [nn.functional.pad(r(x), (0, MAX_COUNT - k - 1)) for k, r in enumerate(self.reg)]
        return self.cls(x), torch.stack(outs, 1)


def agglomerate_samples(s, min_match: float = 0.9):
    """(features (m, 13), counts (m,), sorted log area fractions list) of one SyntheticImage."""
    agg = segment_agglomerates(s.image)
    n = int(agg.max())
    if n == 0:
        return np.zeros((0, len(FEATURE_NAMES))), np.zeros(0, int), []
    f = agglomerate_features(s.image, agg)
    keep, counts, fracs = [], [], []
    for k in range(1, n + 1):
        m = agg == k
        ids, cnt = np.unique(s.agglomerate_labels[m], return_counts=True)
        if ids[0] == 0:
            ids, cnt = ids[1:], cnt[1:]
        if len(ids) != 1 or cnt[0] < min_match * m.sum():
            continue
        gt = s.agglomerate_labels == ids[0]
        if (gt & m).sum() < min_match * gt.sum():
            continue
        d = s.diameters[s.agglomerate_ids == ids[0] - 1]
        if not 1 <= len(d) <= MAX_COUNT:
            continue
        keep.append(k - 1)
        counts.append(len(d))
        fracs.append(np.sort(np.log(np.pi * d**2 / 4 / f[k - 1, 0]))[::-1])
    return f[keep], np.asarray(counts, int), fracs


def make_dataset(n_images: int, seed0: int = TRAIN_SEED0 + 500_000):
    p = SynthParams(gmd=(10.0, 48.0), gsd=(1.05, 1.45), particles_per_agglomerate=(1, MAX_COUNT),
                    max_agglomerates=25, coverage=0.3, absorption=(0.15, 0.8), overlap_range=(0.0, 0.3))
    feats, counts, fracs = [], [], []
    for i in range(n_images):
        rng = np.random.default_rng([seed0 + i, 11])
        s = generate(seed0 + i, replace(p, dose=float(np.exp(rng.uniform(np.log(80), np.log(1500))))))
        f, c, fr = agglomerate_samples(s)
        feats.append(f)
        counts.append(c)
        fracs += fr
    y = np.zeros((len(fracs), MAX_COUNT))
    for i, fr in enumerate(fracs):
        y[i, : len(fr)] = fr
    return np.concatenate(feats), np.concatenate(counts), y


def split_70_15_15(n: int, seed: int = 0):
    idx = np.random.default_rng(seed).permutation(n)
    a, b = int(0.7 * n), int(0.85 * n)
    return idx[:a], idx[a:b], idx[b:]


def _losses(model, x, c, y):
    logits, reg = model(x)
    l_cls = nn.functional.cross_entropy(logits, c - 1)
    sel = reg[torch.arange(len(c)), c - 1]                   # regressor of the true count
    mask = (torch.arange(MAX_COUNT)[None, :] < c[:, None]).float()
    l_reg = ((sel - y) ** 2 * mask).sum() / mask.sum()
    return l_cls, l_reg, logits, sel


def train(x, c, y, epochs: int = 400, lr: float = 3e-3, seed: int = 0):
    torch.manual_seed(seed)
    tr, va, te = split_70_15_15(len(x), seed)
    xt = transform_features(x)
    mean, std = xt[tr].mean(0), xt[tr].std(0) + 1e-6
    X = torch.tensor((xt - mean) / std, dtype=torch.float32)
    C = torch.tensor(c, dtype=torch.long)
    Y = torch.tensor(y, dtype=torch.float32)
    model = AnnNet()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best, best_state = np.inf, None
    g = torch.Generator().manual_seed(seed)
    for ep in range(epochs):
        model.train()
        perm = torch.tensor(tr)[torch.randperm(len(tr), generator=g)]
        for b in range(0, len(perm), 256):
            i = perm[b:b + 256]
            l_cls, l_reg, _, _ = _losses(model, X[i], C[i], Y[i])
            opt.zero_grad()
            (l_cls + l_reg).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            l_cls, l_reg, _, _ = _losses(model, X[va], C[va], Y[va])
        v = float(l_cls + l_reg)
        if v < best:
            best, best_state = v, {k: t.clone() for k, t in model.state_dict().items()}
        if (ep + 1) % 50 == 0:
            print(f"epoch {ep + 1} val {v:.4f} best {best:.4f}", flush=True)
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        _, _, logits, sel = _losses(model, X[te], C[te], Y[te])
        acc = float((logits.argmax(1) + 1 == C[te]).float().mean())
        mask = (torch.arange(MAX_COUNT)[None, :] < C[te][:, None])
        err = (sel - Y[te])[mask]
        # relative error of a particle's diameter from its area fraction: exp(err / 2) - 1
        d_rel = float((torch.exp(err / 2) - 1).abs().mean())
    metrics = {"count_accuracy_test": acc, "diameter_mae_rel_test_true_count": d_rel,
               "n_train": len(tr), "n_val": len(va), "n_test": len(te)}
    return model, mean, std, metrics


def export(model, mean, std, metrics, data_info, version="1.0.0") -> tuple[bytes, dict]:
    x = torch.zeros(2, len(FEATURE_NAMES))
    prog = torch.onnx.export(model, (x,), dynamo=True, external_data=False, input_names=["features"],
                             output_names=["count_logits", "log_area_fractions"],
                             dynamic_shapes={"x": {0: torch.export.Dim("n", max=100_000)}})
    onnx_bytes = prog.model_proto.SerializeToString()
    manifest = {
        "schema_version": 1, "name": "tem-ann", "version": version, "task": "agglomerate-sizing",
        "description": "Frei & Kruis (2018) reproduction: particle-number classifier (13-39 tanh-5) and "
                       "per-count area regressors (tanh hidden layers) on 13 agglomerate features",
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "inputs": [{"name": "features", "dtype": "float32", "shape": ["n", 13]}],
        "outputs": [{"name": "count_logits", "dtype": "float32", "shape": ["n", 5]},
                    {"name": "log_area_fractions", "dtype": "float32", "shape": ["n", 5, 5]}],
        "class_names": ["1", "2", "3", "4", "5"],
        "preprocessing": {"features": list(FEATURE_NAMES), "log_features": "see nanolens_tem.science.ann.LOG_FEATURES",
                          "feature_mean": [float(v) for v in mean], "feature_std": [float(v) for v in std],
                          "hidden": list(HIDDEN)},
        "metrics": {k: float(v) for k, v in metrics.items()},
        "training_data": data_info,
        "framework": {"torch": torch.__version__, "onnx_exporter": "dynamo"},
    }
    return onnx_bytes, manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-images", type=int, default=800)
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--version", default="1.0.0")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / f"ann_data_{args.n_images}.npz"
    if cache.exists():
        z = np.load(cache)
        x, c, y = z["x"], z["c"], z["y"]
    else:
        t = time.time()
        x, c, y = make_dataset(args.n_images)
        np.savez(cache, x=x, c=c, y=y)
        print(f"{len(x)} agglomerates from {args.n_images} images in {time.time() - t:.0f}s", flush=True)
    print("counts", np.bincount(c)[1:], flush=True)
    model, mean, std, metrics = train(x, c, y, epochs=args.epochs)
    print(metrics, flush=True)
    h = hashlib.sha256(np.ascontiguousarray(x).tobytes() + np.ascontiguousarray(y).tobytes()).hexdigest()
    info = {"sha256": h, "n_items": int(len(x)),
            "source": f"nanolens_tem.synthetic.agglomerates agglomerates (1-5 particles), {args.n_images} images, "
                      f"seeds from {TRAIN_SEED0 + 500_000}"}
    onnx_bytes, man = export(model, mean, std, metrics, info, args.version)
    from nanolens_runtime.bundles import write_bundle

    write_bundle(args.out, onnx_bytes, man)
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

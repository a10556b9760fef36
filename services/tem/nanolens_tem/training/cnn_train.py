"""Training of the TEM U-Net (torch) and its export to an ONNX model bundle.

``python -m nanolens_tem.training.cnn_train --out DIR`` generates synthetic training images
(seeds from the training split), trains with augmentation, exports ONNX and writes a model
bundle. ``--finetune-real`` adds real images with instance masks (see :func:`targets_from_instances`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from torch import nn

from nanolens_tem.evaluation.splits import TRAIN_SEED0
from nanolens_tem.science.cnn import MAX_RADIUS, RADIUS_UNIT, TARGET_RADIUS, normalise
from nanolens_tem.synthetic.agglomerates import OVERLAP_RULES, SynthParams, generate
from nanolens_tem.synthetic.faceted import FacetedParams, generate_faceted

# faceted-crystal training images use seeds of their own inside the training split
FACETED_SEED0 = TRAIN_SEED0 + 500_000

# --------------------------------------------------------------------------------------------
# targets


def boundary_map(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels of an instance that touch a *different* instance (not background), dilated by
    ``width - 1``."""
    lab = labels
    b = np.zeros(lab.shape, bool)
    for axis in (0, 1):
        a = np.swapaxes(lab, 0, axis)
        bb = np.swapaxes(b, 0, axis)
        diff = (a[1:] != a[:-1]) & (a[1:] > 0) & (a[:-1] > 0)
        bb[1:] |= diff
        bb[:-1] |= diff
    if width > 1:
        b = ndi.binary_dilation(b, iterations=width - 1) & (lab > 0)
    return b


def targets_from_synthetic(s, overlap_as_boundary: bool = False) -> np.ndarray:
    """(4, H, W) float32 targets [fg, boundary, dist, radius/RADIUS_UNIT] of a SyntheticImage.

    Spheres: the distance is radial from the particle's centre (``1 - rho/r``). Faceted crystals
    (``s.extra["shape"] == "faceted"``): the distance is to the visible outline, as for real
    masks (:func:`targets_from_instances`). With ``overlap_as_boundary``, pixels that two crystals
    cover are particle and boundary with distance 0, as real masks leave such overlap lenses out of
    both instances; otherwise they belong to the front crystal. The radius is the whole
    particle's in both cases."""
    lab = s.labels
    if s.extra.get("shape") == "faceted":
        overlap = s.extra["overlap"] if overlap_as_boundary else np.zeros(lab.shape, bool)
        t = targets_from_instances(np.where(overlap, 0, lab))
        t[0][overlap], t[1][overlap], t[2][overlap] = 1.0, 1.0, 0.0
        if len(s.diameters):
            t[3] = np.where(lab > 0, s.diameters[np.maximum(lab - 1, 0)] / 2.0 / RADIUS_UNIT, 0)
        return t
    h, w = lab.shape
    fg = lab > 0
    k = np.maximum(lab - 1, 0)
    yy, xx = np.mgrid[0:h, 0:w]
    r = s.diameters[k] / 2.0 if len(s.diameters) else np.zeros((h, w))
    cy = s.centres[k, 0] if len(s.diameters) else np.zeros((h, w))
    cx = s.centres[k, 1] if len(s.diameters) else np.zeros((h, w))
    dist = np.where(fg, np.clip(1.0 - np.hypot(yy - cy, xx - cx) / np.maximum(r, 1e-6), 0, 1), 0)
    rad = np.where(fg, r / RADIUS_UNIT, 0)
    return np.stack([fg, boundary_map(lab), dist, rad]).astype(np.float32)


def targets_from_instances(labels: np.ndarray) -> np.ndarray:
    """Targets from an instance label image (real masks): the distance map is each instance's
    Euclidean distance transform divided by its maximum; the radius is the equivalent-circle
    radius. Background gaps between touching instances count as boundary."""
    fg = labels > 0
    # thin background lines separating touching instances are the boundary class
    grown = ndi.grey_dilation(labels, size=3)
    gap = ~fg & (ndi.grey_erosion(np.where(fg, labels, labels.max() + 1), size=3) != grown) & (grown > 0)
    gap &= ndi.binary_dilation(fg, iterations=1)
    bnd = boundary_map(labels) | gap
    n = int(labels.max())
    dist = np.zeros(labels.shape, np.float32)
    rad = np.zeros(labels.shape, np.float32)
    if n:
        # EDT per instance: background between instances is not crossed
        for sl, k in zip(ndi.find_objects(labels), range(1, n + 1), strict=True):
            if sl is None:
                continue
            m = labels[sl] == k
            e = ndi.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
            dist[sl][m] = (e / max(e.max(), 1.0))[m]
            rad[sl][m] = np.sqrt(m.sum() / np.pi) / RADIUS_UNIT
    return np.stack([fg, bnd, dist, rad]).astype(np.float32)


# --------------------------------------------------------------------------------------------
# model


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Small U-Net: 4 poolings (input sides multiples of 16), widths ``base * (1, 2, 3, 4, 6)``."""

    def __init__(self, base: int = 12, out_ch: int = 4):
        super().__init__()
        ch = [base, 2 * base, 3 * base, 4 * base, 6 * base]
        self.enc = nn.ModuleList([_block(1, ch[0])] + [_block(ch[i], ch[i + 1]) for i in range(4)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2) for i in range(4)])
        self.dec = nn.ModuleList([_block(2 * ch[i], ch[i]) for i in range(4)])
        self.head = nn.Conv2d(ch[0], out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, enc in enumerate(self.enc):
            x = enc(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for i in reversed(range(4)):
            x = self.dec[i](torch.cat([self.up[i](x), skips[i]], 1))
        return self.head(x)


def unet_base(state: dict) -> int:
    """The ``base`` width of a :class:`UNet` checkpoint (its head reads ``base`` channels)."""
    return int(state["head.weight"].shape[1])


def widen(model: UNet, base: int, noise: float = 0.0, seed: int = 0) -> UNet:
    """A wider copy of ``model`` that computes the same function (Net2WiderNet, Chen et al. 2016).

    Each new channel copies an old one chosen at random; every layer that reads a copied channel
    divides its weights for it by the number of copies, so the sum it computes is unchanged, and
    BatchNorm sees identical copies with identical statistics. Copies would then receive identical
    updates forever, so ``noise`` (relative to each layer's weight sd) perturbs the weights of the
    new channels only."""
    old_base = model.head.in_channels
    if base < old_base:
        raise ValueError(f"cannot widen a base-{old_base} U-Net to base {base}")
    rng = np.random.default_rng(seed)
    wide = UNet(base, model.head.out_channels)
    mult = (1, 2, 3, 4, 6)

    def channel_map(i: int) -> tuple[np.ndarray, np.ndarray]:  # new -> old channel, copies per old one
        n_old, n_new = mult[i] * old_base, mult[i] * base
        g = np.concatenate([np.arange(n_old), rng.integers(0, n_old, n_new - n_old)])
        return g, np.bincount(g, minlength=n_old).astype(np.float32)

    def copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, g: np.ndarray) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(dst, name).data.copy_(getattr(src, name).data[g])
        dst.num_batches_tracked.data.copy_(src.num_batches_tracked.data)

    def perturb(w: torch.Tensor, out_dim: int, n_old_out: int) -> None:  # the new output channels only
        if noise > 0:
            part = w.narrow(out_dim, n_old_out, w.shape[out_dim] - n_old_out)
            gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
            part.add_(torch.randn(part.shape, generator=gen) * noise * float(w.std()))

    def copy_conv(dst: nn.Conv2d, src: nn.Conv2d, g_out, g_in, copies_in, transposed: bool = False) -> None:
        w = src.weight.data
        if transposed:  # ConvTranspose2d weights are (in, out, k, k)
            w = w[g_in][:, g_out] / torch.from_numpy(copies_in[g_in])[:, None, None, None]
        else:
            w = w[g_out][:, g_in] / torch.from_numpy(copies_in[g_in])[None, :, None, None]
        dst.weight.data.copy_(w)
        out_dim = 1 if transposed else 0
        perturb(dst.weight.data, out_dim, src.weight.shape[out_dim])
        if src.bias is not None:
            dst.bias.data.copy_(src.bias.data[g_out])

    def copy_block(dst: nn.Sequential, src: nn.Sequential, i: int, g_in, copies_in):
        g_mid, c_mid = channel_map(i)
        copy_conv(dst[0], src[0], g_mid, g_in, copies_in)
        copy_bn(dst[1], src[1], g_mid)
        g_out, c_out = channel_map(i)
        copy_conv(dst[3], src[3], g_out, g_mid, c_mid)
        copy_bn(dst[4], src[4], g_out)
        return g_out, c_out

    g, c = np.zeros(1, int), np.ones(1, np.float32)  # the one image channel
    enc_maps = []
    for i in range(5):
        g, c = copy_block(wide.enc[i], model.enc[i], i, g, c)
        enc_maps.append((g, c))
    for i in reversed(range(4)):
        g_up, c_up = channel_map(i)
        copy_conv(wide.up[i], model.up[i], g_up, g, c, transposed=True)
        g_skip, c_skip = enc_maps[i]
        n_old = mult[i] * old_base  # decoder input: [upsampled, skip], each n_old channels before
        g, c = copy_block(wide.dec[i], model.dec[i], i, np.concatenate([g_up, n_old + g_skip]),
                          np.concatenate([c_up, c_skip]))
    out = np.arange(model.head.out_channels)
    copy_conv(wide.head, model.head, out, g, c)
    return wide


def instance_weights(t: np.ndarray, max_weight: float, ref_radius: float = TARGET_RADIUS) -> np.ndarray:
    """(H, W) loss weights from targets ``t`` (4, H, W): ``sqrt(pi ref_radius^2 / area)`` clipped
    to [1, ``max_weight``] on each particle, by the area the particle owns, so that small and
    mostly hidden particles, which the per-pixel loss otherwise neglects, count for more; 1 on
    the background. Particles are the connected parts of foreground minus boundary; boundary
    pixels take the largest weight next to them."""
    core = (t[0] > 0.5) & (t[1] < 0.5)
    lab, n = ndi.label(core)
    w = np.ones(t.shape[1:], np.float32)
    if n:
        area = np.bincount(lab.ravel())[1:].astype(np.float64)
        wk = np.clip(np.sqrt(np.pi * ref_radius**2 / area), 1.0, max_weight)
        w = np.concatenate([[1.0], wk]).astype(np.float32)[lab]
        edge = (t[0] > 0.5) & ~core
        w[edge] = ndi.grey_dilation(w, size=3)[edge]
    return w


def loss_fn(out: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Foreground and boundary BCE plus L1 of distance and radius on the foreground; a fifth
    target channel, when present, weights every pixel (:func:`instance_weights`)."""
    fg = tgt[:, 0]
    w = tgt[:, 4] if tgt.shape[1] > 4 else torch.ones_like(fg)
    bce = F.binary_cross_entropy_with_logits
    l_fg = (bce(out[:, 0], fg, reduction="none") * w).sum() / w.sum()
    l_b = (bce(out[:, 1], tgt[:, 1], pos_weight=torch.tensor(3.0), reduction="none") * w).sum() / w.sum()
    wf = w * fg
    m = wf.sum().clamp_min(1.0)
    l_d = ((out[:, 2] - tgt[:, 2]).abs() * wf).sum() / m
    l_r = ((out[:, 3] - tgt[:, 3]).abs() * wf).sum() / m
    return l_fg + l_b + 2.0 * l_d + 2.0 * l_r


# --------------------------------------------------------------------------------------------
# data


def train_params(shape: tuple[int, int] = (256, 256)) -> SynthParams:
    """Training distribution: wider than the test distribution in size, noise and contrast."""
    return SynthParams(shape=shape, gmd=(10.0, 48.0), gsd=(1.05, 1.45), particles_per_agglomerate=(1, 50),
                       coverage=0.25, absorption=(0.15, 0.8), overlap_range=(0.0, 0.3))


def _vary(rng: np.random.Generator, p: SynthParams) -> SynthParams:
    return replace(p, dose=float(np.exp(rng.uniform(np.log(80), np.log(1500)))),
                   psf_sigma=float(rng.uniform(0.5, 1.8)), film_texture=float(rng.uniform(0.01, 0.07)),
                   flatness=float(rng.uniform(0.3, 1.0)), aggregation="bpca" if rng.random() < 0.3 else "bcca",
                   scale_bar=bool(rng.random() < 0.1))


def training_images(n: int, seed0: int = TRAIN_SEED0, shape=(256, 256), overlaps: str = "deepest"):
    """The sphere images of seeds ``seed0 .. seed0 + n - 1`` drawn like the training images
    (per-image dose, blur, texture: :func:`_vary`); other seeds give images of the same
    distribution that were never trained on (:mod:`nanolens_tem.training.calibrate`)."""
    base = replace(train_params(shape), overlaps=overlaps)
    for i in range(n):
        rng = np.random.default_rng([seed0 + i, 7])
        yield generate(seed0 + i, _vary(rng, base))


def make_synthetic_set(n: int, seed0: int = TRAIN_SEED0, shape=(256, 256), overlaps: str = "deepest"):
    """``n`` (image, targets) pairs of :func:`training_images`; ``overlaps`` labels overlapping
    spheres (:func:`~nanolens_tem.synthetic.agglomerates.render`; ``"front"`` reproduces the training images
    of ``tem-unet`` 1.0.0 and 1.1.0)."""
    xs, ys = [], []
    for s in training_images(n, seed0, shape, overlaps):
        xs.append(normalise(s.image))
        ys.append(targets_from_synthetic(s))
    return np.stack(xs)[:, None], np.stack(ys)


def faceted_train_params(shape: tuple[int, int] = (256, 256)) -> FacetedParams:
    """Faceted crystals at the sizes the network sees after :func:`~nanolens_tem.science.cnn.auto_scale`
    (recipe ``packed``, ``tem-unet`` 1.1.0)."""
    return FacetedParams(shape=shape, gmd=(14.0, 48.0), gsd=(1.05, 1.3))


def dense_faceted_train_params(shape: tuple[int, int] = (256, 256)) -> FacetedParams:
    """Recipe ``dense``: packed monolayers whose neighbours may overlap by a thin lens, more
    crystals lying on others, a third of the images ordered row superlattices, bend contours
    across half of the crystals (an experiment, see docs/tem.md; not in a shipped model)."""
    return replace(faceted_train_params(shape), rounding=(0.05, 0.45), gap=(-0.06, 0.06), overlap_fraction=0.3,
                   lattice_fraction=0.3, coverage=(0.3, 0.8), bend_contours=0.5)


#: faceted training recipes: (parameters, overlaps trained as boundary)
FACETED_RECIPES = {"packed": (faceted_train_params, False), "dense": (dense_faceted_train_params, True)}


def faceted_training_images(n: int, seed0: int = FACETED_SEED0, shape=(256, 256), recipe: str = "packed"):
    """The faceted-crystal images (:mod:`nanolens_tem.synthetic.faceted`) of seeds ``seed0 .. seed0 + n - 1``
    drawn like the training images of ``recipe``, with per-image dose, blur and film texture."""
    if recipe not in FACETED_RECIPES:
        raise ValueError(f"faceted recipe {recipe!r}: expected one of {', '.join(FACETED_RECIPES)}")
    base = FACETED_RECIPES[recipe][0](shape)
    for i in range(n):
        rng = np.random.default_rng([seed0 + i, 7])
        optics = replace(base.optics, dose=float(np.exp(rng.uniform(np.log(80), np.log(1500)))),
                         psf_sigma=float(rng.uniform(0.5, 1.8)), film_texture=float(rng.uniform(0.01, 0.07)))
        yield generate_faceted(seed0 + i, replace(base, optics=optics))


def make_faceted_set(n: int, seed0: int = FACETED_SEED0, shape=(256, 256), recipe: str = "packed"):
    """``n`` (image, targets) pairs of :func:`faceted_training_images` (training seeds ``seed0 ..``)."""
    overlap_as_boundary = FACETED_RECIPES.get(recipe, (None, False))[1]
    xs, ys = [], []
    for s in faceted_training_images(n, seed0, shape, recipe):
        xs.append(normalise(s.image))
        ys.append(targets_from_synthetic(s, overlap_as_boundary))
    return np.stack(xs)[:, None], np.stack(ys)


def augment(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """Random crop, dihedral transform, gamma/contrast jitter and extra noise (x: (1,H,W))."""
    _, h, w = x.shape
    if h > crop or w > crop:
        y0, x0 = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
        x, y = x[:, y0:y0 + crop, x0:x0 + crop], y[:, y0:y0 + crop, x0:x0 + crop]
    k = int(rng.integers(4))
    x, y = np.rot90(x, k, (1, 2)), np.rot90(y, k, (1, 2))
    if rng.random() < 0.5:
        x, y = x[:, :, ::-1], y[:, :, ::-1]
    x = x * rng.uniform(0.8, 1.25) + rng.uniform(-0.1, 0.1)
    if rng.random() < 0.3:
        x = x + rng.normal(0, rng.uniform(0.01, 0.08), x.shape)
    return np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.float32)


# --------------------------------------------------------------------------------------------
# training and export


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, *, steps: int, batch: int = 8, crop: int = 192,
          lr: float = 3e-3, seed: int = 0, log_every: int = 50, sample_weights: np.ndarray | None = None) -> list:
    """Adam + one-cycle schedule on random augmented crops; returns the loss history."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    p = None if sample_weights is None else sample_weights / sample_weights.sum()
    hist, t0 = [], time.time()
    model.train()
    for step in range(steps):
        idx = rng.choice(len(x), batch, p=p)
        xb, yb = zip(*(augment(rng, x[i], y[i], crop) for i in idx), strict=True)
        out = model(torch.from_numpy(np.stack(xb)))
        loss = loss_fn(out, torch.from_numpy(np.stack(yb)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        hist.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps} loss {np.mean(hist[-log_every:]):.4f} {time.time() - t0:.0f}s", flush=True)
    model.eval()
    return hist


def export_onnx(model: nn.Module) -> bytes:
    """ONNX bytes with dynamic batch, height and width (sides multiples of 16)."""
    model.eval()
    x = torch.zeros(1, 1, 64, 64)
    dims = {0: torch.export.Dim("batch", max=64), 2: 16 * torch.export.Dim("h16", min=1, max=512),
            3: 16 * torch.export.Dim("w16", min=1, max=512)}
    prog = torch.onnx.export(model, (x,), dynamo=True, external_data=False, input_names=["image"],
                             output_names=["maps"], dynamic_shapes={"x": dims}, verbose=False)
    return prog.model_proto.SerializeToString()


def manifest(name: str, version: str, metrics: dict, data_desc: dict, base: int,
             target_radius: float = TARGET_RADIUS, calibration: dict | None = None) -> dict:
    """The bundle manifest; ``calibration`` (:mod:`nanolens_tem.training.calibrate`) becomes
    ``postprocessing``."""
    out = {
        "schema_version": 1,
        "name": name,
        "version": version,
        "task": "instance-segmentation",
        "description": "U-Net predicting particle foreground, touching-boundary, normalised distance and "
                       "radius maps of TEM primary particles; instances by seeded watershed (nanolens_tem.science.cnn)",
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "inputs": [{"name": "image", "dtype": "float32", "shape": ["batch", 1, "height", "width"],
                    "note": "height and width multiples of 16"}],
        "outputs": [{"name": "maps", "dtype": "float32", "shape": ["batch", 4, "height", "width"],
                     "channels": ["fg_logit", "boundary_logit", "dist", "radius/32px"]}],
        "class_names": ["background", "particle"],
        "preprocessing": {"normalise": "(x - p1) / (p99 - p1) - 0.5 per image", "polarity": "dark particles",
                          "radius_unit_px": RADIUS_UNIT, "multiple": 16, "tile": 512, "overlap": 64,
                          "target_radius_px": target_radius, "max_radius_px": MAX_RADIUS},
        "metrics": metrics,
        "training_data": data_desc,
        "framework": {"torch": torch.__version__, "onnx_exporter": "dynamo", "unet_base": base},
    }
    if calibration:
        calibration = dict(calibration)
        detection = calibration.pop("detection", None)
        out["postprocessing"] = {"radius_spread": calibration["radius_spread"], "radius_spread_fit": calibration}
        if detection:  # nanolens_tem.science.occlusion
            out["postprocessing"]["detection"] = detection
    return out


def data_hash(x: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x).tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()


def _cache_path(folder: Path, stem: str, n: int, variant: str, original: str) -> Path:
    """``stem_n.npz`` for the variant 1.0.0/1.1.0 were trained on, ``stem_n_variant.npz`` for
    the ones added later, so that no cache is reused for another variant."""
    return folder / f"{stem}_{n}{'' if variant == original else '_' + variant}.npz"


def _cached(path: Path, make, n: int):
    """``make(n)`` -> (x, y), kept in ``path`` so that reruns train on the same images."""
    if path.exists():
        z = np.load(path)
        return z["x"], z["y"]
    t = time.time()
    x, y = make(n)
    np.savez(path, x=x, y=y)
    print(f"generated {len(x)} images into {path.name} in {time.time() - t:.0f}s", flush=True)
    return x, y


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="work folder: checkpoint, ONNX, bundle")
    ap.add_argument("--n-images", type=int, default=600)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=192)
    ap.add_argument("--base", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--init", type=Path, help="checkpoint to start from (fine-tuning); a narrower one is widened "
                    "to --base first, computing the same function (widen)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--n-faceted", type=int, default=0, help="faceted-crystal images added to the spheres")
    ap.add_argument("--faceted-weight", type=float, default=0.4, help="fraction of samples drawn from them")
    ap.add_argument("--faceted-recipe", choices=sorted(FACETED_RECIPES), default="packed",
                    help="packed: tem-unet 1.1.0's; dense: lattices, thin overlaps as boundary, bend contours")
    ap.add_argument("--sphere-overlaps", choices=OVERLAP_RULES, default="deepest",
                    help="labels of overlapping spheres: deepest (from tem-unet 1.2.0) or front (up to 1.1.0)")
    ap.add_argument("--instance-weight", type=float, default=1.0,
                    help="largest loss weight of a small particle (instance_weights); 1: unweighted")
    ap.add_argument("--seed", type=int, default=0, help="crop/augmentation seed (vary it between continued runs)")
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--name", default="tem-unet")
    args = ap.parse_args(argv)
    if args.n_faceted and not 0 < args.faceted_weight < 1:
        ap.error(f"--faceted-weight {args.faceted_weight}: expected a fraction between 0 and 1")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rule = args.sphere_overlaps
    x, y = _cached(_cache_path(args.out, "synthetic", args.n_images, rule, "front"),
                   lambda n: make_synthetic_set(n, overlaps=rule), args.n_images)
    weights, source = None, (f"nanolens_tem.synthetic.agglomerates, training seeds "
                             f"{TRAIN_SEED0}..{TRAIN_SEED0 + len(x) - 1}, "
                             f"train_params() with per-image dose/PSF/texture variation, overlaps labelled {rule!r}")
    if args.n_faceted:
        recipe = args.faceted_recipe
        fx, fy = _cached(_cache_path(args.out, "faceted", args.n_faceted, recipe, "packed"),
                         lambda n: make_faceted_set(n, recipe=recipe), args.n_faceted)
        weights = np.concatenate([np.full(len(x), (1 - args.faceted_weight) / len(x)),
                                  np.full(len(fx), args.faceted_weight / len(fx))])
        x, y = np.concatenate([x, fx]), np.concatenate([y, fy])
        source += (f"; nanolens_tem.synthetic.faceted, seeds {FACETED_SEED0}..{FACETED_SEED0 + len(fx) - 1}, "
                   f"{FACETED_RECIPES[recipe][0].__name__}(), {args.faceted_weight:.0%} of the samples")
    if args.instance_weight > 1:
        w = np.stack([instance_weights(t, args.instance_weight) for t in y])[:, None]
        y = np.concatenate([y, w], axis=1)
        source += f"; loss weighted by particle size, at most {args.instance_weight:g}x"
    model = UNet(args.base)
    if args.init:
        state = torch.load(args.init)
        if (init_base := unet_base(state)) != args.base:  # a narrower network grows into the wider one
            narrow = UNet(init_base)
            narrow.load_state_dict(state)
            state = widen(narrow, args.base, noise=0.01, seed=args.seed).state_dict()
            source += f"; widened from base {init_base} to {args.base} (Net2WiderNet)"
        model.load_state_dict(state)
    train(model, x, y, steps=args.steps, batch=args.batch, crop=args.crop, lr=args.lr, seed=args.seed,
          sample_weights=weights)
    torch.save(model.state_dict(), args.out / "model.pt")
    onnx_bytes = export_onnx(model)
    (args.out / "model.onnx").write_bytes(onnx_bytes)
    info = {"sha256": data_hash(x, y), "n_items": int(len(x)), "source": source}
    (args.out / "training_data.json").write_text(json.dumps(info, indent=2))
    print("wrote", args.out / "model.onnx", len(onnx_bytes), "bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

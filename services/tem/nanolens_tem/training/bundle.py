"""Write the CNN model bundle from a trained ONNX file, with evaluation metrics in the manifest.

``python -m nanolens_tem.training.bundle --work DIR --eval EVAL.json --out BUNDLE_DIR``

``DIR/calibration.json``, when present (:mod:`nanolens_tem.training.calibrate`), becomes the
manifest's ``postprocessing``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from nanolens_tem.training.cnn_train import manifest, unet_base


def flat_metrics(ev: dict, method: str = "cnn") -> dict:
    """Flat numbers from an evaluate.py JSON for one method."""
    out = {}
    for block in ev.get("synthetic") or []:
        syn = block["methods"].get(method)
        if syn:
            c = block["condition"]
            out.update({f"synthetic_{c}_n_images": float(block["n_images"]), f"synthetic_{c}_gmd_err": syn["gmd_err"],
                        f"synthetic_{c}_gsd_err": syn["gsd_err"], f"synthetic_{c}_f1_iou50": syn["f1_iou50"]})
            if "gmd_err_found_only" in syn:  # occlusion-corrected above; the found particles alone here
                out.update({f"synthetic_{c}_gmd_err_found_only": syn["gmd_err_found_only"],
                            f"synthetic_{c}_gsd_err_found_only": syn["gsd_err_found_only"]})
    for block in ev.get("real") or []:
        real = block["methods"].get(method)
        if real:
            tag = "strict" if not block.get("cut_bridges") else "bridges_cut"
            if block.get("min_area"):
                tag += f"_min{block['min_area']}px"
            r = real["all"]
            out.update({f"real_gold_{tag}_n_images": float(r["n_images"]), f"real_gold_{tag}_f1_iou50": r["f1_iou50"],
                        f"real_gold_{tag}_count_err": r["count_err"], f"real_gold_{tag}_gmd_err": r["gmd_err"],
                        f"real_gold_{tag}_gsd_err": r["gsd_err"]})
    return out


def main(argv=None) -> int:
    from nanolens_runtime.bundles import write_bundle

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, required=True, help="cnn_train --out folder")
    ap.add_argument("--eval", type=Path, help="evaluate.py tem_eval.json")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", default="tem-unet")
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    onnx_bytes = (args.work / "model.onnx").read_bytes()
    data = json.loads((args.work / "training_data.json").read_text())
    if args.note:
        data["source"] += "; " + args.note
    base = unet_base(torch.load(args.work / "model.pt"))  # the checkpoint says how wide the net is
    metrics = flat_metrics(json.loads(args.eval.read_text())) if args.eval else {}
    calib_file = args.work / "calibration.json"
    calibration = json.loads(calib_file.read_text()) if calib_file.exists() else None
    write_bundle(args.out, onnx_bytes, manifest(args.name, args.version, metrics, data, base,
                                                calibration=calibration))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

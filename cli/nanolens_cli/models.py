"""``nanolens models list`` and ``nanolens models register``: the models behind the gateway, and a
bundle folder put into the models bucket (also what the training commands' ``--register`` does)."""

from __future__ import annotations

import json
from pathlib import Path

from nanolens_cli.client import add_gateway, connect


def register_bundle(path: Path) -> str:
    """Verify a bundle folder and upload it to the models bucket (NANOLENS_S3_* settings)."""
    from nanolens_runtime.bundles import ModelBundle
    from nanolens_runtime.registry import upload_bundle
    from nanolens_runtime.settings import StorageSettings, from_env
    from nanolens_runtime.storage import ObjectStore

    storage = from_env(StorageSettings)
    return upload_bundle(ObjectStore.from_settings(storage), storage.models_bucket, ModelBundle.load(path))


def cmd_list(args) -> int:
    from google.protobuf import json_format

    with connect(args) as client:
        response = client.list_models()
    if args.json:
        print(json.dumps(json_format.MessageToDict(response, preserving_proto_field_name=True), indent=2))
        return 0
    for service in response.services:
        for m in service.models:
            acc = m.metrics.get("cv_accuracy_mean")
            # segmenters and the classical baselines have no classes to list
            print(f"{service.service:<8} {m.name:<24} {m.version:<8} {'default' if m.is_default else '':<8}"
                  f"{m.sha256[:12]}" + (f"  classes={','.join(m.class_names)}" if m.class_names else "")
                  + (f"  cv_accuracy={acc:.3f}" if acc is not None else ""))
            if m.training_data:
                print(f"{'':<8} trained on: {m.training_data}")
    return 0


def cmd_register(args) -> int:
    print(f"registered: {register_bundle(Path(args.bundle))}")
    return 0


def add_parsers(sub) -> None:
    models = sub.add_parser("models", help="models behind the gateway")
    msub = models.add_subparsers(dest="action", required=True)
    listing = msub.add_parser("list")
    listing.add_argument("--json", action="store_true")
    add_gateway(listing)
    listing.set_defaults(func=cmd_list)
    register = msub.add_parser("register", help="upload a model bundle folder (manifest.json + model.onnx) to the "
                                                "models bucket; services load it on first use")
    register.add_argument("bundle", help="folder holding manifest.json and model.onnx (e.g. from finetune --all)")
    register.set_defaults(func=cmd_register)

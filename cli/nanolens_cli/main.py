"""``nanolens``: run the local stack, analyse files through the gateway, train and list models."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

import grpc

from nanolens_runtime.errors import NanoLensError

DEFAULT_GATEWAY = "127.0.0.1:50050"


def _gateway(args) -> str:
    return args.gateway or os.environ.get("NANOLENS_GATEWAY", DEFAULT_GATEWAY)


def cmd_up(args) -> int:
    from nanolens_cli.stack import Stack

    stack = Stack(host=args.host, s3_port=args.s3_port, spectra_port=args.spectra_port, tem_port=args.tem_port,
                  gateway_port=args.gateway_port, echo_logs=args.logs)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    print("starting S3 server, spectra and TEM services, gateway ...", file=sys.stderr)
    try:
        endpoints = stack.start()
    except (RuntimeError, TimeoutError) as exc:  # a process that did not start; its log is in the message
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"s3       {endpoints.s3}")
        print(f"spectra  {endpoints.spectra}")
        print(f"tem      {endpoints.tem}")
        print(f"gateway  {endpoints.gateway}")
        for name, url in endpoints.metrics.items():
            print(f"metrics  {name} {url}")
        print("stack ready (Ctrl-C stops it); clients use:", flush=True)
        for key, value in endpoints.client_env().items():
            print(f"  export {key}={value}", flush=True)
        stopped.wait()
    finally:
        print("stopping ...", file=sys.stderr)
        stack.stop()
    print("stopped", file=sys.stderr)
    return 0


def _analyze(args, kind: int, options: dict[str, str], print_summary) -> int:
    """Upload a local file, analyse it through the gateway, print or save the result."""
    from nanolens_cli.client import GatewayClient, save_outputs

    client = GatewayClient(_gateway(args))
    try:
        uploaded = client.upload(Path(args.file), key=args.key, timeout=args.timeout)
        response = client.analyze(uploaded.object, kind, model=args.model, options=options, force=args.force,
                                  timeout=args.timeout)
        if args.out:
            written = save_outputs(client, response, Path(args.out))
            print(f"wrote {len(written)} files to {args.out}", file=sys.stderr)
    finally:
        client.close()
    result = json.loads(response.result_json)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['analysis']} of s3://{result['input']['bucket']}/{result['input']['key']}"
          f"{' (stored result)' if response.cached else ''}")
    prov = result["provenance"]
    print(f"model {prov['model_name']} {prov['model_version']} ({prov['model_sha256'][:12] or 'no model'}) "
          f"on {prov['execution_provider']}")
    print_summary(result)
    print(f"result: s3://{response.result.bucket}/{response.result.key}")
    return 0


def _print_spectra(result: dict) -> None:
    if "class_fractions" in result:
        print(f"map {result['shape'][0]} x {result['shape'][1]} x {result['shape'][2]}")
        for name, fraction in result["class_fractions"].items():
            print(f"  {name:<20} {100 * fraction:6.2f} %")
        return
    for row in result["spectra"]:
        probs = "  ".join(f"{n} {p:.3f}" for n, p in row["probabilities"].items())
        print(f"  #{row['index']:<4} {row['class']:<20} {probs}")
    if result["listed"] < result["n_spectra"]:
        print(f"  ... {result['n_spectra'] - result['listed']} more in probabilities.npy")


def _print_particles(result: dict) -> None:
    dist, image = result["distribution"], result["image"]
    size = f"{image['pixel_size_nm']:.4g} nm/px ({image['pixel_size_source']})" if image["pixel_size_nm"] else \
        "pixel size unknown"
    gmd = f"{dist['gmd_nm']:.4g} nm" if dist["gmd_nm"] else f"{dist['gmd_px']:.4g} px"
    print(f"{result['method']}: {dist['count']} primary particles in {result['n_agglomerates']} agglomerates; "
          f"{image['width']} x {image['height']} px, {size}")
    print(f"  GMD {gmd}, GSD {dist['gsd']:.3f}")


def cmd_analyze_spectra(args) -> int:
    from nanolens.gateway.v1 import gateway_pb2
    from nanolens_cli.client import looks_like_map

    path = Path(args.file)
    if not path.is_file():
        print(f"error: {path} is not a file", file=sys.stderr)
        return 2
    kind = (gateway_pb2.ANALYSIS_KIND_SPECTRAL_MAP if args.map or looks_like_map(path)
            else gateway_pb2.ANALYSIS_KIND_SPECTRA)
    bad = [kv for kv in args.option if not all(kv.partition("=")[:2])]  # no key, or no '='
    if bad:
        print(f"error: --option {bad[0]!r} is not KEY=VALUE", file=sys.stderr)
        return 2
    return _analyze(args, kind, dict(kv.split("=", 1) for kv in args.option), _print_spectra)


def cmd_analyze_tem(args) -> int:
    from nanolens.gateway.v1 import gateway_pb2

    if not Path(args.file).is_file():
        print(f"error: {args.file} is not a file", file=sys.stderr)
        return 2
    options = {}
    if args.method:
        options["method"] = args.method
    if args.pixel_size_nm is not None:
        options["pixel_size_nm"] = repr(args.pixel_size_nm)
    if args.bright_particles:
        options["bright_particles"] = "true"
    if args.tta:
        options["tta"] = "true"
    return _analyze(args, gateway_pb2.ANALYSIS_KIND_PARTICLE_SIZES, options, _print_particles)


def cmd_models_list(args) -> int:
    from google.protobuf import json_format

    from nanolens_cli.client import GatewayClient

    client = GatewayClient(_gateway(args))
    try:
        response = client.list_models()
    finally:
        client.close()
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
    return 0


def register_bundle(path: Path) -> str:
    """Verify a bundle folder and upload it to the models bucket (NANOLENS_S3_* settings)."""
    from nanolens_runtime.bundles import ModelBundle
    from nanolens_runtime.registry import upload_bundle
    from nanolens_runtime.settings import StorageSettings, from_env
    from nanolens_runtime.storage import ObjectStore

    storage = from_env(StorageSettings)
    return upload_bundle(ObjectStore.from_settings(storage), storage.models_bucket, ModelBundle.load(path))


def cmd_models_register(args) -> int:
    print(f"registered: {register_bundle(Path(args.bundle))}")
    return 0


def cmd_spectra_train(args) -> int:
    from nanolens_spectra.training import train

    result = train.run(args)
    if args.register:
        print(f"registered: {register_bundle(result.path)}")
    return 0


def cmd_demo(args) -> int:
    from nanolens_cli.demo import run_demo

    return run_demo(Path(args.out))


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from nanolens_spectra.training.train import add_arguments  # torch is imported only when training runs

    add_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nanolens", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run S3 server, services and gateway on loopback until Ctrl-C")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--gateway-port", type=int, default=50050)
    up.add_argument("--spectra-port", type=int, default=50051)
    up.add_argument("--tem-port", type=int, default=50052)
    up.add_argument("--s3-port", type=int, default=9000)
    up.add_argument("--logs", action="store_true", help="echo the processes' logs")
    up.set_defaults(func=cmd_up)

    analyze = sub.add_parser("analyze", help="upload a file and analyse it through the gateway")
    domains = analyze.add_subparsers(dest="domain", required=True)
    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("file")
        sub.add_argument("--model", default="", help="NAME or NAME:VERSION (default: the service's default)")
        sub.add_argument("--key", default="", help="object key for the upload (default: uploads/<uuid>/<name>)")
        sub.add_argument("--force", action="store_true", help="recompute even if a stored result exists")
        sub.add_argument("--json", action="store_true", help="print the whole result as JSON")
        sub.add_argument("--out", help="write result.json and the artefacts into this folder")
        sub.add_argument("--timeout", type=float, default=600.0, help="deadline in seconds")
        sub.add_argument("--gateway", help=f"gateway host:port (env NANOLENS_GATEWAY, default {DEFAULT_GATEWAY})")

    spec = domains.add_parser("spectra", help="classify spectra or a spectral map (H x W x C .npy/.npz)")
    common(spec)
    spec.add_argument("--map", action="store_true", help="treat the file as a spectral map (auto for 3-D arrays)")
    spec.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                      help="analysis option; spectra take array_key=NAME (the array of an .npz file)")
    spec.set_defaults(func=cmd_analyze_spectra)

    tem = domains.add_parser("tem", help="primary-particle sizes in a TEM or SEM image (TIFF, PNG, JPEG, .npy)")
    common(tem)
    tem.add_argument("--method", choices=["cnn", "ann", "watershed", "hough"],
                     help="default: the best method the service has")
    tem.add_argument("--pixel-size-nm", type=float, help="overrides the pixel size in the file's metadata")
    tem.add_argument("--bright-particles", action="store_true", help="particles brighter than the background")
    tem.add_argument("--tta", action="store_true",
                     help="cnn only: average the network over the image's 8 rotations and reflections (8x the time)")
    tem.set_defaults(func=cmd_analyze_tem)

    models = sub.add_parser("models", help="models behind the gateway")
    msub = models.add_subparsers(dest="action", required=True)
    mlist = msub.add_parser("list")
    mlist.add_argument("--json", action="store_true")
    mlist.add_argument("--gateway")
    mlist.set_defaults(func=cmd_models_list)
    mreg = msub.add_parser("register", help="upload a model bundle folder (manifest.json + model.onnx) to the "
                                            "models bucket; services load it on first use")
    mreg.add_argument("bundle", help="folder holding manifest.json and model.onnx (e.g. from finetune --all)")
    mreg.set_defaults(func=cmd_models_register)

    spectra = sub.add_parser("spectra", help="spectra models")
    ssub = spectra.add_subparsers(dest="action", required=True)
    train = ssub.add_parser("train", help="cross-validate, train, export and register a model on labelled spectra")
    _add_train_arguments(train)
    train.add_argument("--register", action="store_true",
                       help="upload to the models bucket (NANOLENS_S3_* settings)")
    train.set_defaults(func=cmd_spectra_train)

    demo = sub.add_parser("demo", help="the main job: stack on loopback, sample data, analyses, pictures")
    demo.add_argument("--out", default="demo-output")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, NanoLensError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

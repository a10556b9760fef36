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

    ports = {name.removesuffix("_port"): value for name, value in vars(args).items() if name.endswith("_port")}
    stack = Stack(host=args.host, ports=ports, echo_logs=args.logs)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, lambda *_: stopped.set())
    print(f"starting S3 server, {', '.join(stack.services[:-1])} services, gateway ...", file=sys.stderr)
    try:
        endpoints = stack.start()
    except (RuntimeError, TimeoutError) as exc:  # a process that did not start; its log is in the message
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"{'s3':<8} {endpoints.s3}")
        for name, address in endpoints.services.items():
            print(f"{name:<8} {address}")
        print(f"{'gateway':<8} {endpoints.gateway}")
        for name, url in endpoints.metrics.items():
            print(f"metrics  {name} {url}")
        print("stack ready (Ctrl-C stops it); clients use:", flush=True)
        for key, value in endpoints.client_env().items():
            print(f"  export {key}={value}", flush=True)
        stopped.wait()
    except OSError:  # stdout went away (a pipe whose reader died): stop all the same
        pass
    finally:
        print("stopping ...", file=sys.stderr)
        stack.stop()
    print("stopped", file=sys.stderr)
    return 0


def cmd_analyze(args) -> int:
    """Upload a local file, analyse it through the gateway (the analysis and options from the
    domain's record), print or save the result."""
    from nanolens_cli.client import GatewayClient, save_outputs

    domain = args.domain_record
    path = Path(args.file)
    if not path.is_file():
        print(f"error: {path} is not a file", file=sys.stderr)
        return 2
    bad = [kv for kv in args.option if not all(kv.partition("=")[:2])]  # no key, or no '='
    if bad:
        print(f"error: --option {bad[0]!r} is not KEY=VALUE", file=sys.stderr)
        return 2
    options = dict(kv.split("=", 1) for kv in args.option)
    for option in domain.options():
        value = getattr(args, _dest(option.flag), None) if option.flag else None
        if value is None or value is False:
            continue
        options[option.key] = "true" if value is True else str(value)
    kind = domain.choose(path, args) if domain.choose else domain.analyses[0].kind

    client = GatewayClient(_gateway(args))
    try:
        uploaded = client.upload(path, key=args.key, timeout=args.timeout)
        if domain.progress:  # frames done, particles found: nanolens_cli.lpem
            from nanolens_cli.lpem import analyze_with_progress

            response = analyze_with_progress(client, uploaded.object, kind, model=args.model, options=options,
                                             force=args.force, timeout=args.timeout)
        else:
            response = client.analyze(uploaded.object, kind, model=args.model, options=options, force=args.force,
                                      timeout=args.timeout)
        if args.out:
            written = save_outputs(client, response, Path(args.out))
            print(f"wrote {len(written)} files to {args.out}", file=sys.stderr)
    finally:
        client.close()
    result = json.loads(response.result_json)
    warnings = result.get("quality", {}).get("warnings", [])
    if args.json:
        print(json.dumps(result, indent=2))
        return UNTRUSTED if warnings else 0
    print(f"{result['analysis']} of s3://{result['input']['bucket']}/{result['input']['key']}"
          f"{' (stored result)' if response.cached else ''}")
    prov = result["provenance"]
    print(f"model {prov['model_name']} {prov['model_version']} ({prov['model_sha256'][:12] or 'no model'}) "
          f"on {prov['execution_provider']}")
    if prov.get("model_training_data"):
        print(f"trained on: {prov['model_training_data']}")
    for line in domain.summarise(result):
        print(line)
    for warning in warnings:
        print(f"warning: do not trust this result: {warning}")
    print(f"result: s3://{response.result.bucket}/{response.result.key}")
    return UNTRUSTED if warnings else 0


#: exit status of ``analyze`` when the result carries quality warnings (it is stored all the same)
UNTRUSTED = 3


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


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
            if m.training_data:
                print(f"{'':<8} trained on: {m.training_data}")
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


def all_settings() -> list[tuple[str, list[tuple[str, object, str]]]]:
    """(group, [(variable, default, description)]) for every process's settings."""
    from nanolens_gateway.domains import address_settings
    from nanolens_gateway.server import GatewaySettings
    from nanolens_runtime.settings import InferenceSettings, ServerSettings, StorageSettings, describe
    from nanolens_runtime.tls import TlsSettings, UpstreamTlsSettings

    return [("every process", describe(ServerSettings)), ("every process: TLS", describe(TlsSettings)),
            ("object storage", describe(StorageSettings)),
            ("domain services: inference", describe(InferenceSettings)),
            ("gateway", describe(GatewaySettings) + address_settings()),
            ("gateway: TLS to the domain services", describe(UpstreamTlsSettings))]


def cmd_settings(args) -> int:
    for group, rows in all_settings():
        print(f"# {group}")
        for env, default, doc in rows:
            print(f"{env:<34} {default!s:<18} {doc}")
    return 0


def cmd_demo(args) -> int:
    from nanolens_cli.demo import run_demo

    return run_demo(Path(args.out))


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from nanolens_spectra.training.train import add_arguments  # torch is imported only when training runs

    add_arguments(parser)


def _add_option_flag(parser: argparse.ArgumentParser, option) -> None:
    """An analysis option as a typed flag: yes/no options are switches, choices are checked here."""
    if option.kind == "yes_no":
        parser.add_argument(option.flag, action="store_true", help=option.help)
    elif option.kind == "choice":
        parser.add_argument(option.flag, choices=option.choices, help=option.help)
    elif option.kind == "positive_number":
        parser.add_argument(option.flag, type=float, help=option.help)
    else:
        parser.add_argument(option.flag, help=option.help)


def build_parser() -> argparse.ArgumentParser:
    from nanolens_gateway.domains import domains as all_domains

    parser = argparse.ArgumentParser(prog="nanolens", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run S3 server, services and gateway on loopback until Ctrl-C")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--gateway-port", type=int, default=50050)
    for i, domain in enumerate(all_domains()):
        up.add_argument(f"--{domain.name}-port", type=int, default=50051 + i, help=f"{domain.name} service port")
    up.add_argument("--s3-port", type=int, default=9000)
    up.add_argument("--logs", action="store_true", help="echo the processes' logs")
    up.set_defaults(func=cmd_up)

    analyze = sub.add_parser("analyze", help="upload a file and analyse it through the gateway")
    domains = analyze.add_subparsers(dest="domain", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("file")
        sub.add_argument("--model", default="", help="NAME or NAME:VERSION (default: the service's default)")
        sub.add_argument("--key", default="", help="object key for the upload (default: uploads/<content "
                         "sha256>/<name>: the same file is the same object, so its stored result is reused)")
        sub.add_argument("--force", action="store_true", help="recompute even if a stored result exists")
        sub.add_argument("--json", action="store_true", help="print the whole result as JSON")
        sub.add_argument("--out", help="write result.json and the artefacts into this folder")
        sub.add_argument("--timeout", type=float, default=600.0, help="deadline in seconds")
        sub.add_argument("--gateway", help=f"gateway host:port (env NANOLENS_GATEWAY, default {DEFAULT_GATEWAY})")

    for domain in all_domains():
        one = domains.add_parser(domain.name, help=f"{domain.title}: {domain.file_help}")
        common(one)
        for flag, spec in domain.cli_flags:
            one.add_argument(flag, **spec)
        for option in domain.options():
            if option.flag:
                _add_option_flag(one, option)
        keys = ", ".join(o.key for o in domain.options()) or "none"
        one.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help=f"analysis option (keys: {keys})")
        one.set_defaults(func=cmd_analyze, domain_record=domain)

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

    from nanolens_cli import jobs, results, sem, tokens

    sem.add_parsers(sub)
    tokens.add_parser(sub)
    jobs.add_parsers(sub)
    results.add_parser(sub)

    settings = sub.add_parser("settings", help="every NANOLENS_* setting of every process, with its default")
    settings.set_defaults(func=cmd_settings)

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

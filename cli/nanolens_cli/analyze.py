"""``nanolens analyze <domain> FILE``: upload a local file and analyse it through the gateway, one
subcommand per registered domain (its options as typed flags, from the domain registry)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nanolens_cli.client import Progress, add_gateway, connect

#: exit status of ``analyze`` when the result carries quality warnings (it is stored all the same)
UNTRUSTED = 3


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def cmd_analyze(args) -> int:
    """Upload, analyse (the analysis and options from the domain's record), print or save the result."""
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

    with connect(args) as client:
        with Progress(f"upload {path.name}") as bar:
            uploaded = client.upload(path, key=args.key, timeout=args.timeout, on_bytes=bar.bytes)
        if domain.progress:  # frames done, particles found: nanolens_cli.lpem
            from nanolens_cli.lpem import ProgressLine

            with ProgressLine() as line:
                result = client.analyse_object(uploaded.object, kind, model=args.model, force=args.force,
                                               timeout=args.timeout, on_progress=line.draw, **options)
        else:
            with Progress("analyse", clock=True):
                result = client.analyse_object(uploaded.object, kind, model=args.model, force=args.force,
                                               timeout=args.timeout, **options)
        if args.out:
            written = client.save(result, args.out, timeout=args.timeout)
            print(f"wrote {len(written)} files to {args.out}", file=sys.stderr)
    warnings = result.verdict.warnings if result.verdict else ()
    if args.json:
        print(json.dumps(result.document, indent=2))
        return UNTRUSTED if warnings else 0
    print(f"{result.analysis} of {result.input}{' (stored result)' if result.cached else ''}")
    prov = result.provenance
    print(f"model {prov.model_name} {prov.model_version} ({prov.model_sha256[:12] or 'no model'}) "
          f"on {prov.execution_provider}")
    if prov.model_training_data:
        print(f"trained on: {prov.model_training_data}")
    for line in domain.summarise(result.document):
        print(line)
    for warning in warnings:
        print(f"warning: do not trust this result: {warning}")
    print(f"result: {result.location}")
    return UNTRUSTED if warnings else 0


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


def add_parsers(sub) -> None:
    from nanolens_gateway.domains import domains as all_domains

    analyze = sub.add_parser("analyze", help="upload a file and analyse it through the gateway")
    domains = analyze.add_subparsers(dest="domain", required=True)
    for domain in all_domains():
        one = domains.add_parser(domain.name, help=f"{domain.title}: {domain.file_help}")
        one.add_argument("file")
        one.add_argument("--model", default="", help="NAME or NAME:VERSION (default: the service's default)")
        one.add_argument("--key", default="", help="object key for the upload (default: uploads/<content "
                         "sha256>/<name>: the same file is the same object, so its stored result is reused)")
        one.add_argument("--force", action="store_true", help="recompute even if a stored result exists")
        one.add_argument("--json", action="store_true", help="print the whole result as JSON")
        one.add_argument("--out", help="write result.json and the artefacts into this folder")
        one.add_argument("--timeout", type=float, default=600.0, help="deadline in seconds")
        add_gateway(one)
        for flag, spec in domain.cli_flags:
            one.add_argument(flag, **spec)
        for option in domain.options():
            if option.flag:
                _add_option_flag(one, option)
        keys = ", ".join(o.key for o in domain.options()) or "none"
        one.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help=f"analysis option (keys: {keys})")
        one.set_defaults(func=cmd_analyze, domain_record=domain)

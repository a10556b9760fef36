"""``nanolens spectra train``: cross-validate, train, export and register a spectra model."""

from __future__ import annotations

import argparse

from nanolens_cli.models import register_bundle


def cmd_train(args) -> int:
    from nanolens_spectra.training import train

    result = train.run(args)
    if args.register:
        print(f"registered: {register_bundle(result.path)}")
    return 0


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from nanolens_spectra.training.train import add_arguments  # torch is imported only when training runs

    add_arguments(parser)


def add_parsers(sub) -> None:
    spectra = sub.add_parser("spectra", help="spectra models")
    ssub = spectra.add_subparsers(dest="action", required=True)
    train = ssub.add_parser("train", help="cross-validate, train, export and register a model on labelled spectra")
    _add_train_arguments(train)
    train.add_argument("--register", action="store_true",
                       help="upload to the models bucket (NANOLENS_S3_* settings)")
    train.set_defaults(func=cmd_train)

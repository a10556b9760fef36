"""Proto enums as the lower-case words that settings, options and results use."""

from __future__ import annotations

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper


def enum_words(enum: EnumTypeWrapper, prefix: str) -> dict[str, int]:
    """``{"cnn": 1, ...}`` from ``METHOD_CNN = 1, ...``; the ``*_UNSPECIFIED`` zero value is left out.

    The proto enum is the one table of a domain's choices: the service, the gateway and the CLI
    all read it from here, so a new value reaches all three at once.
    """
    return {name.removeprefix(prefix).lower(): number for name, number in enum.items() if number != 0}

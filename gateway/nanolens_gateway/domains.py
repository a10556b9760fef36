"""The domain registry: every domain service the gateway routes to, declared once.

A domain (spectra, TEM, ...) is one record: its name, the module that runs its service, its
gRPC stub, its analyses and the options each reads, and the gateway RPCs it adds with the
action each needs. The gateway builds its clients, its analysis table, its extra RPCs and their
access rules from :func:`domains`; the CLI builds ``nanolens analyze <domain>`` from it; the
local stack starts one process per domain from it. Adding a domain is its contract, its service
folder, its adapter (``nanolens_gateway/adapters/<domain>.py``, which defines ``DOMAIN``) and one
line in :data:`DOMAIN_MODULES` (see CONTRIBUTING.md).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache

from google.protobuf.message import Message

from nanolens.common.v1 import common_pb2
from nanolens_gateway.context import AnalysisContext, Outcome
from nanolens_gateway.schema import Schema, result_schema
from nanolens_gateway.upstream import ServiceClient
from nanolens_runtime.errors import InvalidArgument
from nanolens_runtime.options import parse_yes_no

#: the gateway modules that define a ``DOMAIN``, in the order the local stack starts them
DOMAIN_MODULES = ("nanolens_gateway.adapters.spectra", "nanolens_gateway.adapters.tem",
                  "nanolens_gateway.adapters.lpem", "nanolens_gateway.adapters.sem")


@dataclass(frozen=True)
class Option:
    """One option key an analysis reads, how its value is checked, and how it is written.

    ``kind``: ``"text"`` (any value), ``"choice"`` (one of ``choices``, any case), ``"yes_no"``
    (a yes or no word; a no is dropped, so ``tta=no`` is the same request as no ``tta``) or
    ``"positive_number"`` (finite, > 0, written in its shortest form: ``0.50`` is ``0.5``).
    Every value is put in one spelling so that the same request makes the same result identity.
    ``flag``: the CLI flag (``--pixel-size-nm``); empty: only ``--option KEY=VALUE`` sets it.
    ``from_input``: for a yes/no option whose absence means "decided from the input" (TEM's
    ``bright_particles``, from the file's detector): an explicit no is kept, as ``false``.
    """

    key: str
    help: str
    kind: str = "text"
    choices: tuple[str, ...] = ()
    flag: str = ""
    from_input: bool = False

    def __post_init__(self):
        if self.kind not in ("text", "choice", "yes_no", "positive_number"):
            raise ValueError(f"option {self.key}: unknown kind {self.kind!r}")

    def canonical(self, raw: str) -> str | None:
        """The value in its one spelling, or None when it means "not set"; a bad value is refused."""
        where = f"options.{self.key}"
        if self.kind == "yes_no":
            value = parse_yes_no(raw)
            if value is None:
                raise InvalidArgument(f"option {self.key}={raw!r} must be true or false (1/0, yes/no, on/off)",
                                      field=where)
            return "true" if value else ("false" if self.from_input else None)
        if raw == "":
            return None
        if self.kind == "choice":
            if raw.lower() not in self.choices:
                raise InvalidArgument(f"option {self.key}={raw!r} is not one of {sorted(self.choices)}", field=where)
            return raw.lower()
        if self.kind == "positive_number":
            try:
                value = float(raw)
            except ValueError:
                value = -1.0
            if not (value > 0 and math.isfinite(value)):
                raise InvalidArgument(f"option {self.key}={raw!r} must be a positive number", field=where)
            return repr(value)
        return raw


def yes(options: dict[str, str], key: str) -> bool:
    """A yes/no option of options already made canonical (:meth:`Analysis.canonical_options`)."""
    return options.get(key) == "true"


async def named_model(client: ServiceClient, name: str, version: str, options: dict[str, str]) -> common_pb2.ModelInfo:
    """The default model resolution: the named model, or the service's default, newest version."""
    return await client.catalogue.resolve(name, version)


@dataclass(frozen=True)
class Analysis:
    """One kind of analysis: its gateway enum value, its name in results, how it runs, the option
    keys it reads (any other key is refused: a typo would go unseen) and how the model that makes
    its result's identity is resolved."""

    kind: int  # a nanolens.gateway.v1.AnalysisKind value
    name: str
    run: Callable[[AnalysisContext, ServiceClient], Awaitable[Outcome]]
    options: tuple[Option, ...] = ()
    resolve: Callable[[ServiceClient, str, str, dict[str, str]], Awaitable[common_pb2.ModelInfo]] = named_model
    #: the fields its summary adds to result.json (nanolens_gateway.schema builders), and what it is
    result: dict[str, Schema] = field(default_factory=dict)
    doc: str = ""

    def schema(self) -> Schema:
        """The JSON Schema of this analysis's whole result.json (envelope and fields)."""
        return result_schema(self.name, self.result, self.doc)

    def canonical_options(self, options: dict[str, str]) -> dict[str, str]:
        """Refuse unknown keys (all of them named) and bad values; every value in its one spelling."""
        known = {o.key: o for o in self.options}
        unknown = sorted(set(options) - set(known))
        if unknown:
            named = ", ".join(repr(k) for k in unknown)
            takes = ", ".join(known) or "no options"
            raise InvalidArgument(f"option {named} {'is not an option' if len(unknown) == 1 else 'are not options'} "
                                  f"of {self.name} analyses; they take {takes}", field=f"options.{unknown[0]}")
        canonical = {}
        for key, raw in options.items():
            value = known[key].canonical(raw)
            if value is not None:
                canonical[key] = value
        return canonical


@dataclass(frozen=True)
class DomainRpc:
    """A Gateway RPC that a domain adds (declared in gateway.proto, served by its adapter).

    ``handler(plane, request) -> response``: ``plane`` is the gateway's
    :class:`nanolens_gateway.dataplane.DataPlane`. ``action``: what a token must allow to call it
    (``read``, ``upload``, ``analyse``, ``submit``); the object checks are the handler's own."""

    name: str
    action: str
    handler: Callable[..., Awaitable[Message]]


@dataclass(frozen=True)
class Domain:
    """A domain service as the gateway, the CLI and the local stack see it.

    ``summarise(result) -> lines`` says what a result found in a few lines (the CLI prints them);
    ``choose(path, requested) -> AnalysisKind`` picks the analysis for a local file when the
    domain has several (spectra: a map or a list of spectra).
    """

    name: str  # "tem": service name in settings, metrics, provenance and the chart
    title: str  # one line for help texts
    module: str  # ``python -m <module>`` runs the service
    stub: type  # the generated stub class
    list_models_request: Message
    analyses: tuple[Analysis, ...]
    summarise: Callable[[dict], list[str]]
    default_addr: str = ""  # empty: the domain is off unless its address setting is set
    choose: Callable[..., int] | None = None
    file_help: str = ""  # what files the CLI's analyze command takes
    cli_flags: tuple[tuple[str, dict], ...] = field(default=())  # extra argparse flags for ``choose``
    progress: bool = False  # the CLI runs it through AnalyzeStream and shows its progress events
    rpcs: tuple[DomainRpc, ...] = ()  # Gateway RPCs this domain adds
    adapter: str = ""  # the adapter module (set by the registry): its code is in every result's identity

    @property
    def addr_setting(self) -> str:
        return f"NANOLENS_{self.name.upper()}_ADDR"

    def address(self, environ: dict[str, str] | None = None) -> str:
        environ = os.environ if environ is None else environ
        return environ.get(self.addr_setting, self.default_addr)

    def client(self, address: str, max_message_mb: int, credentials=None) -> ServiceClient:
        """A client of this domain's service; ``credentials``: TLS channel credentials, None for plaintext."""
        return ServiceClient(self.name, address, max_message_mb, self.stub, self.list_models_request, credentials)

    def options(self) -> tuple[Option, ...]:
        """Every option any of its analyses reads, once each (the CLI's flags)."""
        seen: dict[str, Option] = {}
        for analysis in self.analyses:
            for option in analysis.options:
                seen.setdefault(option.key, option)
        return tuple(seen.values())


@cache
def domains() -> tuple[Domain, ...]:
    """Every registered domain, in :data:`DOMAIN_MODULES` order."""
    return tuple(dataclasses.replace(importlib.import_module(name).DOMAIN, adapter=name) for name in DOMAIN_MODULES)


def domain(name: str) -> Domain:
    for d in domains():
        if d.name == name:
            return d
    raise KeyError(f"no domain {name!r}; registered: {[d.name for d in domains()]}")


def analyses() -> dict[int, tuple[Domain, Analysis]]:
    """AnalysisKind value -> (its domain, the analysis)."""
    table = {}
    for d in domains():
        for a in d.analyses:
            if a.kind in table:
                raise ValueError(f"analysis kind {a.kind} is registered twice ({table[a.kind][1].name}, {a.name})")
            table[a.kind] = (d, a)
    return table


def address_settings() -> list[tuple[str, str, str]]:
    """(variable, default, description) of every domain's address setting, for the settings reference."""
    return [(d.addr_setting, d.default_addr,
             f"{d.title}: {d.name} service host:port" + ("" if d.default_addr else " (empty: off)"))
            for d in domains()]


def domain_rpcs() -> dict[str, DomainRpc]:
    """RPC name -> its declaration, over every domain (a name declared twice is refused)."""
    table: dict[str, DomainRpc] = {}
    for d in domains():
        for rpc in d.rpcs:
            if rpc.name in table:
                raise ValueError(f"gateway RPC {rpc.name} is declared twice")
            table[rpc.name] = rpc
    return table

"""Many small items per call: N single spectra through the stack by AnalyzeMany against concurrent
unary Analyze calls, in one run on one machine.

- unary: N Analyze calls on objects in storage from 64 concurrent callers (each item computed:
  ``force``), the way a client without AnalyzeMany sends many items;
- many, named: one AnalyzeMany call naming the same N objects;
- many, inline: one AnalyzeMany call carrying N other spectra's bytes (stored, then computed);
- numbers only: the unary calls and the named AnalyzeMany call with ``numbers_only`` (no
  spectra.png drawn per item);
- 1-caller latency: one item by Analyze and by AnalyzeMany, median of several;
- the batching engine in process (``bench.spectra.engine_throughput``), the ceiling.

Goals (issue 36): AnalyzeMany >= 5x the unary throughput and >= 50 % of the engine's. Where each
item's time goes is read from its result's provenance (seconds per stage, medians).
"""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import time

import grpc
import numpy as np

from bench.spectra import engine_throughput
from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from nanolens_cli.stack import Stack
from nanolens_runtime.storage import ObjectStore
from nanolens_spectra.synthetic.swcnt import generate_spectra

SPECTRA = gateway_pb2.ANALYSIS_KIND_SPECTRA
CALLERS = 64
LATENCY_REPEATS = 20


def npy(spectrum: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, spectrum[None, :].astype(np.float32))
    return out.getvalue()


def one_spectrum_files(n: int, seed: int) -> list[bytes]:
    spectra = generate_spectra(n_per_class=-(-n // 3), seed=seed).spectra
    return [npy(s) for s in spectra[:n]]


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def stage_medians(responses: list[gateway_pb2.AnalyzeResponse]) -> dict[str, float]:
    """Median seconds per provenance stage over the items (what each item's time went to)."""
    stages: dict[str, list[float]] = {}
    for response in responses:
        for timing in json.loads(response.result_json)["provenance"]["timings"]:
            stages.setdefault(timing["stage"], []).append(timing["seconds"])
    return {stage: round(statistics.median(values), 4) for stage, values in stages.items()}


async def unary(stub, refs: list[common_pb2.ObjectRef], callers: int, **options: str) -> tuple[float, list]:
    """Seconds for one Analyze per object from ``callers`` concurrent callers, and the responses."""
    pending = iter(refs)
    responses = []

    async def caller():
        for ref in pending:
            request = gateway_pb2.AnalyzeRequest(input=ref, analysis=SPECTRA, force=True, options=options)
            responses.append(await stub.Analyze(request, timeout=600))

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return time.perf_counter() - start, responses


async def many(stub, items: list[gateway_pb2.AnalyzeManyRequest]) -> tuple[float, list]:
    """Seconds for one AnalyzeMany call over ``items``, and the results (every item must succeed)."""
    start = time.perf_counter()
    answers = [a async for a in stub.AnalyzeMany(iter(items), timeout=600)]
    wall = time.perf_counter() - start
    failed = [a.error for a in answers if a.WhichOneof("outcome") != "result"]
    if failed or len(answers) != len(items):
        raise RuntimeError(f"{len(failed)} of {len(items)} items failed, {len(answers)} answered: {failed[:3]}")
    return wall, [a.result for a in answers]


def named(i: int, ref: common_pb2.ObjectRef, **options: str) -> gateway_pb2.AnalyzeManyRequest:
    return gateway_pb2.AnalyzeManyRequest(id=str(i), request=gateway_pb2.AnalyzeRequest(
        input=ref, analysis=SPECTRA, force=True, options=options))


def inline(i: int, data: bytes) -> gateway_pb2.AnalyzeManyRequest:
    return gateway_pb2.AnalyzeManyRequest(id=str(i), request=gateway_pb2.AnalyzeRequest(analysis=SPECTRA, force=True),
                                          inline=gateway_pb2.InlineItem(filename="spectrum.npy", data=data))


async def through_stack(address: str, refs: list[common_pb2.ObjectRef], fresh: list[bytes]) -> dict:
    n = len(refs)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        await unary(stub, refs[:4], 4)  # connect, load the model, warm both processes
        unary_s, unary_answers = await unary(stub, refs, CALLERS)
        named_s, named_answers = await many(stub, [named(i, r) for i, r in enumerate(refs)])
        inline_s, _ = await many(stub, [inline(i, d) for i, d in enumerate(fresh)])
        numbers_s, numbers_answers = await many(stub, [named(i, r, numbers_only="yes") for i, r in enumerate(refs)])
        unary_numbers_s, _ = await unary(stub, refs, CALLERS, numbers_only="yes")
        one: dict[str, list[float]] = {"analyze": [], "analyze_many": [], "analyze_numbers_only": [],
                                       "analyze_many_numbers_only": []}
        for i in range(LATENCY_REPEATS):  # interleaved, so drift in load hits all
            one["analyze"].append((await unary(stub, refs[i:i + 1], 1))[0])
            one["analyze_many"].append((await many(stub, [named(0, refs[i])]))[0])
            one["analyze_numbers_only"].append((await unary(stub, refs[i:i + 1], 1, numbers_only="yes"))[0])
            one["analyze_many_numbers_only"].append((await many(stub, [named(0, refs[i], numbers_only="yes")]))[0])
    return {
        "items": n, "unary_callers": CALLERS,
        "unary_items_per_s": round(n / unary_s, 1), "many_named_items_per_s": round(n / named_s, 1),
        "many_inline_items_per_s": round(n / inline_s, 1), "many_numbers_only_items_per_s": round(n / numbers_s, 1),
        "unary_numbers_only_items_per_s": round(n / unary_numbers_s, 1),
        "latency_1_caller_ms": {**{f"{k}_p50": round(1000 * statistics.median(v), 1) for k, v in one.items()},
                                **{f"{k}_p95": round(1000 * p95(v), 1) for k, v in one.items()},
                                "repeats": LATENCY_REPEATS},
        "stages_unary_s": stage_medians(unary_answers), "stages_many_s": stage_medians(named_answers),
        "stages_many_numbers_only_s": stage_medians(numbers_answers),
    }


def run(quick: bool = False) -> dict:
    n = 24 if quick else 96
    files, fresh = one_spectrum_files(n, seed=36), one_spectrum_files(n, seed=37)
    with Stack(extra_env={"NANOLENS_LOG_LEVEL": "WARNING"}, domains=("spectra",)) as endpoints:
        store = ObjectStore.from_settings(endpoints.storage_settings())
        refs = []
        for i, data in enumerate(files):
            info = store.put("raw", f"bench/many/{i}.npy", data, "application/x-npy")
            refs.append(common_pb2.ObjectRef(bucket="raw", key=info.key, version_id=info.version_id))
        results = asyncio.run(through_stack(endpoints.gateway, refs, fresh))
    singles = generate_spectra(n_per_class=50, seed=6).spectra
    engine = asyncio.run(engine_throughput(64, singles, CALLERS, 1000 if quick else 8000))
    results["engine_items_per_s"] = engine["spectra_per_s"]
    results["many_over_unary"] = round(results["many_named_items_per_s"] / results["unary_items_per_s"], 2)
    results["many_over_engine"] = round(results["many_named_items_per_s"] / results["engine_items_per_s"], 4)
    results["numbers_only_over_unary"] = round(
        results["many_numbers_only_items_per_s"] / results["unary_numbers_only_items_per_s"], 2)
    results["numbers_only_over_engine"] = round(
        results["many_numbers_only_items_per_s"] / results["engine_items_per_s"], 4)
    return results


def report(results: dict) -> str:
    lat = results["latency_1_caller_ms"]

    def stages(name: str) -> str:
        return ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in results[name].items())

    return "\n".join([
        f"{results['items']} single spectra through the stack:",
        f"  unary Analyze, {results['unary_callers']} callers  {results['unary_items_per_s']:>9} items/s",
        f"  the same, numbers only        {results['unary_numbers_only_items_per_s']:>9} items/s",
        f"  AnalyzeMany, named            {results['many_named_items_per_s']:>9} items/s",
        f"  AnalyzeMany, inline           {results['many_inline_items_per_s']:>9} items/s",
        f"  AnalyzeMany, numbers only     {results['many_numbers_only_items_per_s']:>9} items/s",
        f"  batching engine in process    {results['engine_items_per_s']:>9} items/s",
        f"  AnalyzeMany / unary {results['many_over_unary']}x, both numbers only "
        f"{results['numbers_only_over_unary']}x (goal >= 5x)",
        f"  AnalyzeMany / engine {100 * results['many_over_engine']:.2f} %, numbers only "
        f"{100 * results['numbers_only_over_engine']:.2f} % (goal >= 50 %)",
        f"  1 caller, p50 (p95) of {lat['repeats']}: Analyze {lat['analyze_p50']} ({lat['analyze_p95']}) ms, "
        f"AnalyzeMany {lat['analyze_many_p50']} ({lat['analyze_many_p95']}) ms; numbers only "
        f"{lat['analyze_numbers_only_p50']} ({lat['analyze_numbers_only_p95']}) ms, "
        f"{lat['analyze_many_numbers_only_p50']} ({lat['analyze_many_numbers_only_p95']}) ms "
        "(goal: Analyze p50 <= 20 ms)",
        f"  per item in AnalyzeMany (median): {stages('stages_many_s')}",
        f"  per item, numbers only (median): {stages('stages_many_numbers_only_s')}",
    ])

"""The schema of ``result.json``: one envelope for every analysis, plus each analysis's fields.

Each analysis declares the fields its summary adds (``Analysis.result``) with these builders;
the result reference (``docs/reference/results.md``) and the JSON Schema files beside it are
generated from them, and the end-to-end tests validate real results against them, so a field
that is written but not declared (or declared but not written) fails a test.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def string(doc: str, enum: list[str] | None = None) -> Schema:
    return {"type": "string", "description": doc, **({"enum": enum} if enum else {})}


def number(doc: str) -> Schema:
    return {"type": "number", "description": doc}


def integer(doc: str) -> Schema:
    return {"type": "integer", "description": doc}


def boolean(doc: str) -> Schema:
    return {"type": "boolean", "description": doc}


def nullable(schema: Schema) -> Schema:
    """The same value, or null when it does not apply (e.g. sizes in nm without a pixel size)."""
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return dict(schema, type=[*types, "null"])


def array(items: Schema, doc: str) -> Schema:
    return {"type": "array", "items": items, "description": doc}


def mapping(values: Schema, doc: str) -> Schema:
    """An object whose keys are data (class names, say), each with a value of one schema."""
    return {"type": "object", "additionalProperties": values, "description": doc}


def record(doc: str, optional: tuple[str, ...] = (), **fields: Schema) -> Schema:
    """An object with exactly these fields (all required but ``optional``)."""
    return {"type": "object", "description": doc, "properties": fields,
            "required": [k for k in fields if k not in optional], "additionalProperties": False}


_TIMING = record("one stage's wall time", stage=string("stage name: fetch, decode, inference, store, "
                                                         "service.<stage> for the service's own stages"),
                 seconds=number("seconds"))

ENVELOPE: dict[str, Schema] = {
    "job_id": string("unique id of the run that computed this result"),
    "created": string("when the computation started, UTC (ISO 8601)"),
    "analysis": string("the analysis name"),
    "input": record("the exact object analysed", bucket=string("bucket"), key=string("object key"),
                    version_id=string("object version (empty when the bucket is not versioned)"),
                    etag=string("the object's ETag"), size_bytes=integer("object size in bytes")),
    "options": mapping(string("value"), "the options in their canonical spelling (part of the identity)"),
    "identity": string("sha256 of input (bucket, key, version, ETag), analysis, model (name, version, graph "
                       "sha256, serving-code sha256), the gateway adapter's code and options: the same identity "
                       "returns this stored result"),
    "provenance": record(
        "what computed the result",
        model_name=string("model name"), model_version=string("model version"),
        model_sha256=string("sha256 of the model graph (empty for model-free methods)"),
        model_training_data=string("what the model was trained on: which files, or which generator and seeds "
                                   "(empty for model-free methods)"),
        service_name=string("domain service"), service_version=string("domain service version"),
        execution_provider=string("onnxruntime execution provider, e.g. CPUExecutionProvider"),
        code_sha256=string("sha256 of the domain service's serving code (science/ and service.py, with the "
                           "versions of the libraries it leans on)"),
        adapter_code_sha256=string("sha256 of the gateway code that decoded the input and summarised the answer: "
                                   "the domain's adapter and the readers it uses, docstrings and comments left out, "
                                   "and the versions of the programs they run"),
        gateway_version=string("gateway version"), timings=array(_TIMING, "per-stage wall times")),
    "artifacts": array(record("a file written beside result.json", name=string("file name"),
                              media_type=string("media type"), bucket=string("bucket"), key=string("object key"),
                              size_bytes=integer("size in bytes"), sha256=string("sha256 of the file")),
                       "the artefact files of this result"),
    "result": record("where this document is stored", bucket=string("bucket"), key=string("object key")),
}


def result_schema(analysis_name: str, fields: dict[str, Schema], doc: str = "") -> Schema:
    """The JSON Schema of a whole ``result.json`` of one analysis."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"NanoLens {analysis_name} result",
        "description": doc,
        "type": "object",
        "properties": {**ENVELOPE, "analysis": string("the analysis name", [analysis_name]), **fields},
        "required": [*ENVELOPE, *fields],
        "additionalProperties": False,
    }

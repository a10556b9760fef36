from nanolens.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelSelector(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ClassifySpectraRequest(_message.Message):
    __slots__ = ("spectra", "axis", "model")
    SPECTRA_FIELD_NUMBER: _ClassVar[int]
    AXIS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    spectra: _common_pb2.NDArray
    axis: _common_pb2.NDArray
    model: ModelSelector
    def __init__(self, spectra: _Optional[_Union[_common_pb2.NDArray, _Mapping]] = ..., axis: _Optional[_Union[_common_pb2.NDArray, _Mapping]] = ..., model: _Optional[_Union[ModelSelector, _Mapping]] = ...) -> None: ...

class ClassifySpectraResponse(_message.Message):
    __slots__ = ("probabilities", "predicted_class", "class_names", "provenance", "ood_score")
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CLASS_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    OOD_SCORE_FIELD_NUMBER: _ClassVar[int]
    probabilities: _common_pb2.NDArray
    predicted_class: _containers.RepeatedScalarFieldContainer[int]
    class_names: _containers.RepeatedScalarFieldContainer[str]
    provenance: _common_pb2.Provenance
    ood_score: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, probabilities: _Optional[_Union[_common_pb2.NDArray, _Mapping]] = ..., predicted_class: _Optional[_Iterable[int]] = ..., class_names: _Optional[_Iterable[str]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ..., ood_score: _Optional[_Iterable[float]] = ...) -> None: ...

class MapHeader(_message.Message):
    __slots__ = ("shape", "axis", "model", "source")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    AXIS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    axis: _common_pb2.NDArray
    model: ModelSelector
    source: MapSource
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., axis: _Optional[_Union[_common_pb2.NDArray, _Mapping]] = ..., model: _Optional[_Union[ModelSelector, _Mapping]] = ..., source: _Optional[_Union[MapSource, _Mapping]] = ...) -> None: ...

class MapSource(_message.Message):
    __slots__ = ("url", "offset", "dtype", "block_bytes")
    URL_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    BLOCK_BYTES_FIELD_NUMBER: _ClassVar[int]
    url: str
    offset: int
    dtype: str
    block_bytes: int
    def __init__(self, url: _Optional[str] = ..., offset: _Optional[int] = ..., dtype: _Optional[str] = ..., block_bytes: _Optional[int] = ...) -> None: ...

class ClassifyMapRequest(_message.Message):
    __slots__ = ("header", "block")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    header: MapHeader
    block: _common_pb2.NDArray
    def __init__(self, header: _Optional[_Union[MapHeader, _Mapping]] = ..., block: _Optional[_Union[_common_pb2.NDArray, _Mapping]] = ...) -> None: ...

class ClassifyMapResponse(_message.Message):
    __slots__ = ("offset", "probabilities", "class_names", "provenance", "ood_score")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    OOD_SCORE_FIELD_NUMBER: _ClassVar[int]
    offset: int
    probabilities: _common_pb2.NDArray
    class_names: _containers.RepeatedScalarFieldContainer[str]
    provenance: _common_pb2.Provenance
    ood_score: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, offset: _Optional[int] = ..., probabilities: _Optional[_Union[_common_pb2.NDArray, _Mapping]] = ..., class_names: _Optional[_Iterable[str]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ..., ood_score: _Optional[_Iterable[float]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[_common_pb2.ModelInfo, _Mapping]]] = ...) -> None: ...

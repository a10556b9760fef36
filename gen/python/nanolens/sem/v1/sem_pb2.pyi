from nanolens.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AnalyzeImageRequest(_message.Message):
    __slots__ = ("image", "model", "lens", "layers", "max_side", "anomaly", "classifier", "keep_info_bar", "max_channels")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LENS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    ANOMALY_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_FIELD_NUMBER: _ClassVar[int]
    KEEP_INFO_BAR_FIELD_NUMBER: _ClassVar[int]
    MAX_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.NDArray
    model: _common_pb2.ModelSelector
    lens: bool
    layers: _containers.RepeatedScalarFieldContainer[str]
    max_side: int
    anomaly: bool
    classifier: _common_pb2.ModelSelector
    keep_info_bar: bool
    max_channels: int
    def __init__(self, image: _Optional[_Union[_common_pb2.NDArray, _Mapping]] = ..., model: _Optional[_Union[_common_pb2.ModelSelector, _Mapping]] = ..., lens: _Optional[bool] = ..., layers: _Optional[_Iterable[str]] = ..., max_side: _Optional[int] = ..., anomaly: _Optional[bool] = ..., classifier: _Optional[_Union[_common_pb2.ModelSelector, _Mapping]] = ..., keep_info_bar: _Optional[bool] = ..., max_channels: _Optional[int] = ...) -> None: ...

class LayerLens(_message.Message):
    __slots__ = ("name", "channels", "stride", "mean", "std", "sparsity", "peak", "top_channels", "top_channel_means", "maps", "map_channels")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    SPARSITY_FIELD_NUMBER: _ClassVar[int]
    PEAK_FIELD_NUMBER: _ClassVar[int]
    TOP_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    TOP_CHANNEL_MEANS_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    MAP_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    channels: int
    stride: int
    mean: float
    std: float
    sparsity: float
    peak: float
    top_channels: _containers.RepeatedScalarFieldContainer[int]
    top_channel_means: _containers.RepeatedScalarFieldContainer[float]
    maps: _common_pb2.NDArray
    map_channels: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., channels: _Optional[int] = ..., stride: _Optional[int] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ..., sparsity: _Optional[float] = ..., peak: _Optional[float] = ..., top_channels: _Optional[_Iterable[int]] = ..., top_channel_means: _Optional[_Iterable[float]] = ..., maps: _Optional[_Union[_common_pb2.NDArray, _Mapping]] = ..., map_channels: _Optional[_Iterable[int]] = ...) -> None: ...

class Anomaly(_message.Message):
    __slots__ = ("error_map", "block_px", "percentile_map", "image_error", "image_percentile", "tile_px", "anomalous_fraction", "psnr_db")
    ERROR_MAP_FIELD_NUMBER: _ClassVar[int]
    BLOCK_PX_FIELD_NUMBER: _ClassVar[int]
    PERCENTILE_MAP_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ERROR_FIELD_NUMBER: _ClassVar[int]
    IMAGE_PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    TILE_PX_FIELD_NUMBER: _ClassVar[int]
    ANOMALOUS_FRACTION_FIELD_NUMBER: _ClassVar[int]
    PSNR_DB_FIELD_NUMBER: _ClassVar[int]
    error_map: _common_pb2.NDArray
    block_px: int
    percentile_map: _common_pb2.NDArray
    image_error: float
    image_percentile: float
    tile_px: int
    anomalous_fraction: float
    psnr_db: float
    def __init__(self, error_map: _Optional[_Union[_common_pb2.NDArray, _Mapping]] = ..., block_px: _Optional[int] = ..., percentile_map: _Optional[_Union[_common_pb2.NDArray, _Mapping]] = ..., image_error: _Optional[float] = ..., image_percentile: _Optional[float] = ..., tile_px: _Optional[int] = ..., anomalous_fraction: _Optional[float] = ..., psnr_db: _Optional[float] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("label", "probability", "classes", "probabilities", "head", "ood_score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    OOD_SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    probability: float
    classes: _containers.RepeatedScalarFieldContainer[str]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    head: _common_pb2.ModelInfo
    ood_score: float
    def __init__(self, label: _Optional[str] = ..., probability: _Optional[float] = ..., classes: _Optional[_Iterable[str]] = ..., probabilities: _Optional[_Iterable[float]] = ..., head: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., ood_score: _Optional[float] = ...) -> None: ...

class AnalyzeImageResponse(_message.Message):
    __slots__ = ("height", "width", "info_bar_rows", "windows", "layers", "embedding", "anomaly", "classification", "reconstruction", "provenance")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    INFO_BAR_ROWS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    ANOMALY_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    info_bar_rows: int
    windows: int
    layers: _containers.RepeatedCompositeFieldContainer[LayerLens]
    embedding: _common_pb2.NDArray
    anomaly: Anomaly
    classification: Classification
    reconstruction: _common_pb2.NDArray
    provenance: _common_pb2.Provenance
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., info_bar_rows: _Optional[int] = ..., windows: _Optional[int] = ..., layers: _Optional[_Iterable[_Union[LayerLens, _Mapping]]] = ..., embedding: _Optional[_Union[_common_pb2.NDArray, _Mapping]] = ..., anomaly: _Optional[_Union[Anomaly, _Mapping]] = ..., classification: _Optional[_Union[Classification, _Mapping]] = ..., reconstruction: _Optional[_Union[_common_pb2.NDArray, _Mapping]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[_common_pb2.ModelInfo, _Mapping]]] = ...) -> None: ...

from nanolens.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Method(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METHOD_UNSPECIFIED: _ClassVar[Method]
    METHOD_CNN: _ClassVar[Method]
    METHOD_ANN: _ClassVar[Method]
    METHOD_WATERSHED: _ClassVar[Method]
    METHOD_HOUGH: _ClassVar[Method]
METHOD_UNSPECIFIED: Method
METHOD_CNN: Method
METHOD_ANN: Method
METHOD_WATERSHED: Method
METHOD_HOUGH: Method

class AnalyzeImageRequest(_message.Message):
    __slots__ = ("image", "pixel_size_nm", "method", "bright_particles", "model", "test_time_augmentation", "keep_info_bar", "info_bar_rows", "scale", "choose_scale")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PIXEL_SIZE_NM_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    BRIGHT_PARTICLES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEST_TIME_AUGMENTATION_FIELD_NUMBER: _ClassVar[int]
    KEEP_INFO_BAR_FIELD_NUMBER: _ClassVar[int]
    INFO_BAR_ROWS_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    CHOOSE_SCALE_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.NDArray
    pixel_size_nm: float
    method: Method
    bright_particles: bool
    model: _common_pb2.ModelSelector
    test_time_augmentation: bool
    keep_info_bar: bool
    info_bar_rows: int
    scale: float
    choose_scale: bool
    def __init__(self, image: _Optional[_Union[_common_pb2.NDArray, _Mapping]] = ..., pixel_size_nm: _Optional[float] = ..., method: _Optional[_Union[Method, str]] = ..., bright_particles: _Optional[bool] = ..., model: _Optional[_Union[_common_pb2.ModelSelector, _Mapping]] = ..., test_time_augmentation: _Optional[bool] = ..., keep_info_bar: _Optional[bool] = ..., info_bar_rows: _Optional[int] = ..., scale: _Optional[float] = ..., choose_scale: _Optional[bool] = ...) -> None: ...

class Scale(_message.Message):
    __slots__ = ("factor", "source", "typical_radius_px")
    FACTOR_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TYPICAL_RADIUS_PX_FIELD_NUMBER: _ClassVar[int]
    factor: float
    source: str
    typical_radius_px: float
    def __init__(self, factor: _Optional[float] = ..., source: _Optional[str] = ..., typical_radius_px: _Optional[float] = ...) -> None: ...

class Particle(_message.Message):
    __slots__ = ("id", "diameter_px", "diameter_nm", "area_px", "centroid_row", "centroid_col", "agglomerate_id", "weight")
    ID_FIELD_NUMBER: _ClassVar[int]
    DIAMETER_PX_FIELD_NUMBER: _ClassVar[int]
    DIAMETER_NM_FIELD_NUMBER: _ClassVar[int]
    AREA_PX_FIELD_NUMBER: _ClassVar[int]
    CENTROID_ROW_FIELD_NUMBER: _ClassVar[int]
    CENTROID_COL_FIELD_NUMBER: _ClassVar[int]
    AGGLOMERATE_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    id: int
    diameter_px: float
    diameter_nm: float
    area_px: float
    centroid_row: float
    centroid_col: float
    agglomerate_id: int
    weight: float
    def __init__(self, id: _Optional[int] = ..., diameter_px: _Optional[float] = ..., diameter_nm: _Optional[float] = ..., area_px: _Optional[float] = ..., centroid_row: _Optional[float] = ..., centroid_col: _Optional[float] = ..., agglomerate_id: _Optional[int] = ..., weight: _Optional[float] = ...) -> None: ...

class Agglomerate(_message.Message):
    __slots__ = ("id", "particle_count", "min_row", "min_col", "max_row", "max_col")
    ID_FIELD_NUMBER: _ClassVar[int]
    PARTICLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    MIN_ROW_FIELD_NUMBER: _ClassVar[int]
    MIN_COL_FIELD_NUMBER: _ClassVar[int]
    MAX_ROW_FIELD_NUMBER: _ClassVar[int]
    MAX_COL_FIELD_NUMBER: _ClassVar[int]
    id: int
    particle_count: int
    min_row: int
    min_col: int
    max_row: int
    max_col: int
    def __init__(self, id: _Optional[int] = ..., particle_count: _Optional[int] = ..., min_row: _Optional[int] = ..., min_col: _Optional[int] = ..., max_row: _Optional[int] = ..., max_col: _Optional[int] = ...) -> None: ...

class Distribution(_message.Message):
    __slots__ = ("count", "gmd_px", "gmd_nm", "gsd", "histogram_edges", "histogram_counts", "unit", "occlusion_corrected", "estimated_count", "histogram_estimated_counts", "gmd_px_ci_low", "gmd_px_ci_high", "gsd_ci_low", "gsd_ci_high")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    GMD_PX_FIELD_NUMBER: _ClassVar[int]
    GMD_NM_FIELD_NUMBER: _ClassVar[int]
    GSD_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_EDGES_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_COUNTS_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    OCCLUSION_CORRECTED_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COUNT_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_ESTIMATED_COUNTS_FIELD_NUMBER: _ClassVar[int]
    GMD_PX_CI_LOW_FIELD_NUMBER: _ClassVar[int]
    GMD_PX_CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    GSD_CI_LOW_FIELD_NUMBER: _ClassVar[int]
    GSD_CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    count: int
    gmd_px: float
    gmd_nm: float
    gsd: float
    histogram_edges: _containers.RepeatedScalarFieldContainer[float]
    histogram_counts: _containers.RepeatedScalarFieldContainer[int]
    unit: str
    occlusion_corrected: bool
    estimated_count: float
    histogram_estimated_counts: _containers.RepeatedScalarFieldContainer[float]
    gmd_px_ci_low: float
    gmd_px_ci_high: float
    gsd_ci_low: float
    gsd_ci_high: float
    def __init__(self, count: _Optional[int] = ..., gmd_px: _Optional[float] = ..., gmd_nm: _Optional[float] = ..., gsd: _Optional[float] = ..., histogram_edges: _Optional[_Iterable[float]] = ..., histogram_counts: _Optional[_Iterable[int]] = ..., unit: _Optional[str] = ..., occlusion_corrected: _Optional[bool] = ..., estimated_count: _Optional[float] = ..., histogram_estimated_counts: _Optional[_Iterable[float]] = ..., gmd_px_ci_low: _Optional[float] = ..., gmd_px_ci_high: _Optional[float] = ..., gsd_ci_low: _Optional[float] = ..., gsd_ci_high: _Optional[float] = ...) -> None: ...

class AnalyzeImageResponse(_message.Message):
    __slots__ = ("method", "particles", "agglomerates", "distribution", "labels", "provenance", "quality", "info_bar_rows", "scale")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PARTICLES_FIELD_NUMBER: _ClassVar[int]
    AGGLOMERATES_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    INFO_BAR_ROWS_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    method: str
    particles: _containers.RepeatedCompositeFieldContainer[Particle]
    agglomerates: _containers.RepeatedCompositeFieldContainer[Agglomerate]
    distribution: Distribution
    labels: _common_pb2.NDArray
    provenance: _common_pb2.Provenance
    quality: Quality
    info_bar_rows: int
    scale: Scale
    def __init__(self, method: _Optional[str] = ..., particles: _Optional[_Iterable[_Union[Particle, _Mapping]]] = ..., agglomerates: _Optional[_Iterable[_Union[Agglomerate, _Mapping]]] = ..., distribution: _Optional[_Union[Distribution, _Mapping]] = ..., labels: _Optional[_Union[_common_pb2.NDArray, _Mapping]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ..., quality: _Optional[_Union[Quality, _Mapping]] = ..., info_bar_rows: _Optional[int] = ..., scale: _Optional[_Union[Scale, _Mapping]] = ...) -> None: ...

class Quality(_message.Message):
    __slots__ = ("contrast_to_noise", "coverage", "trustworthy", "warnings", "edge_fraction", "faint_fraction", "outline_ratio", "classical_ratio", "classical_count_ratio", "half_scale_ratio")
    CONTRAST_TO_NOISE_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    TRUSTWORTHY_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    EDGE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    FAINT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    OUTLINE_RATIO_FIELD_NUMBER: _ClassVar[int]
    CLASSICAL_RATIO_FIELD_NUMBER: _ClassVar[int]
    CLASSICAL_COUNT_RATIO_FIELD_NUMBER: _ClassVar[int]
    HALF_SCALE_RATIO_FIELD_NUMBER: _ClassVar[int]
    contrast_to_noise: float
    coverage: float
    trustworthy: bool
    warnings: _containers.RepeatedScalarFieldContainer[str]
    edge_fraction: float
    faint_fraction: float
    outline_ratio: float
    classical_ratio: float
    classical_count_ratio: float
    half_scale_ratio: float
    def __init__(self, contrast_to_noise: _Optional[float] = ..., coverage: _Optional[float] = ..., trustworthy: _Optional[bool] = ..., warnings: _Optional[_Iterable[str]] = ..., edge_fraction: _Optional[float] = ..., faint_fraction: _Optional[float] = ..., outline_ratio: _Optional[float] = ..., classical_ratio: _Optional[float] = ..., classical_count_ratio: _Optional[float] = ..., half_scale_ratio: _Optional[float] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[_common_pb2.ModelInfo, _Mapping]]] = ...) -> None: ...

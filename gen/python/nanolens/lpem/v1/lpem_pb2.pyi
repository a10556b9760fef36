from nanolens.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MovieHeader(_message.Message):
    __slots__ = ("pixel_size_nm", "fps", "frames_total", "model", "bright_particles", "search_range_px", "memory_frames", "pair_cutoff_px", "binning")
    PIXEL_SIZE_NM_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BRIGHT_PARTICLES_FIELD_NUMBER: _ClassVar[int]
    SEARCH_RANGE_PX_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FRAMES_FIELD_NUMBER: _ClassVar[int]
    PAIR_CUTOFF_PX_FIELD_NUMBER: _ClassVar[int]
    BINNING_FIELD_NUMBER: _ClassVar[int]
    pixel_size_nm: float
    fps: float
    frames_total: int
    model: _common_pb2.ModelSelector
    bright_particles: bool
    search_range_px: float
    memory_frames: int
    pair_cutoff_px: float
    binning: int
    def __init__(self, pixel_size_nm: _Optional[float] = ..., fps: _Optional[float] = ..., frames_total: _Optional[int] = ..., model: _Optional[_Union[_common_pb2.ModelSelector, _Mapping]] = ..., bright_particles: _Optional[bool] = ..., search_range_px: _Optional[float] = ..., memory_frames: _Optional[int] = ..., pair_cutoff_px: _Optional[float] = ..., binning: _Optional[int] = ...) -> None: ...

class AnalyzeMovieRequest(_message.Message):
    __slots__ = ("header", "frames")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    header: MovieHeader
    frames: _common_pb2.NDArray
    def __init__(self, header: _Optional[_Union[MovieHeader, _Mapping]] = ..., frames: _Optional[_Union[_common_pb2.NDArray, _Mapping]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("frames_done", "frames_total", "particles_found", "tracks")
    FRAMES_DONE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PARTICLES_FOUND_FIELD_NUMBER: _ClassVar[int]
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    frames_done: int
    frames_total: int
    particles_found: int
    tracks: int
    def __init__(self, frames_done: _Optional[int] = ..., frames_total: _Optional[int] = ..., particles_found: _Optional[int] = ..., tracks: _Optional[int] = ...) -> None: ...

class LabelChunk(_message.Message):
    __slots__ = ("first_frame", "labels")
    FIRST_FRAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    first_frame: int
    labels: _common_pb2.NDArray
    def __init__(self, first_frame: _Optional[int] = ..., labels: _Optional[_Union[_common_pb2.NDArray, _Mapping]] = ...) -> None: ...

class Column(_message.Message):
    __slots__ = ("name", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _common_pb2.NDArray
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Union[_common_pb2.NDArray, _Mapping]] = ...) -> None: ...

class TablePart(_message.Message):
    __slots__ = ("table", "columns")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    table: str
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    def __init__(self, table: _Optional[str] = ..., columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ...) -> None: ...

class Diffusion(_message.Message):
    __slots__ = ("d_px2_per_frame", "d_low_px2_per_frame", "d_high_px2_per_frame", "d_um2_per_s", "d_low_um2_per_s", "d_high_um2_per_s", "localisation_var_px2", "msd_d_px2_per_frame", "msd_offset_px2", "n_tracks", "n_steps")
    D_PX2_PER_FRAME_FIELD_NUMBER: _ClassVar[int]
    D_LOW_PX2_PER_FRAME_FIELD_NUMBER: _ClassVar[int]
    D_HIGH_PX2_PER_FRAME_FIELD_NUMBER: _ClassVar[int]
    D_UM2_PER_S_FIELD_NUMBER: _ClassVar[int]
    D_LOW_UM2_PER_S_FIELD_NUMBER: _ClassVar[int]
    D_HIGH_UM2_PER_S_FIELD_NUMBER: _ClassVar[int]
    LOCALISATION_VAR_PX2_FIELD_NUMBER: _ClassVar[int]
    MSD_D_PX2_PER_FRAME_FIELD_NUMBER: _ClassVar[int]
    MSD_OFFSET_PX2_FIELD_NUMBER: _ClassVar[int]
    N_TRACKS_FIELD_NUMBER: _ClassVar[int]
    N_STEPS_FIELD_NUMBER: _ClassVar[int]
    d_px2_per_frame: float
    d_low_px2_per_frame: float
    d_high_px2_per_frame: float
    d_um2_per_s: float
    d_low_um2_per_s: float
    d_high_um2_per_s: float
    localisation_var_px2: float
    msd_d_px2_per_frame: float
    msd_offset_px2: float
    n_tracks: int
    n_steps: int
    def __init__(self, d_px2_per_frame: _Optional[float] = ..., d_low_px2_per_frame: _Optional[float] = ..., d_high_px2_per_frame: _Optional[float] = ..., d_um2_per_s: _Optional[float] = ..., d_low_um2_per_s: _Optional[float] = ..., d_high_um2_per_s: _Optional[float] = ..., localisation_var_px2: _Optional[float] = ..., msd_d_px2_per_frame: _Optional[float] = ..., msd_offset_px2: _Optional[float] = ..., n_tracks: _Optional[int] = ..., n_steps: _Optional[int] = ...) -> None: ...

class MovieSummary(_message.Message):
    __slots__ = ("frames", "height", "width", "detections", "tracks", "pairs", "diffusion", "search_range_px", "memory_frames", "pair_cutoff_px", "provenance", "quality", "binning")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    DIFFUSION_FIELD_NUMBER: _ClassVar[int]
    SEARCH_RANGE_PX_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FRAMES_FIELD_NUMBER: _ClassVar[int]
    PAIR_CUTOFF_PX_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    BINNING_FIELD_NUMBER: _ClassVar[int]
    frames: int
    height: int
    width: int
    detections: int
    tracks: int
    pairs: int
    diffusion: Diffusion
    search_range_px: float
    memory_frames: int
    pair_cutoff_px: float
    provenance: _common_pb2.Provenance
    quality: MovieQuality
    binning: Binning
    def __init__(self, frames: _Optional[int] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., detections: _Optional[int] = ..., tracks: _Optional[int] = ..., pairs: _Optional[int] = ..., diffusion: _Optional[_Union[Diffusion, _Mapping]] = ..., search_range_px: _Optional[float] = ..., memory_frames: _Optional[int] = ..., pair_cutoff_px: _Optional[float] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ..., quality: _Optional[_Union[MovieQuality, _Mapping]] = ..., binning: _Optional[_Union[Binning, _Mapping]] = ...) -> None: ...

class Binning(_message.Message):
    __slots__ = ("factor", "source", "typical_radius_px")
    FACTOR_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TYPICAL_RADIUS_PX_FIELD_NUMBER: _ClassVar[int]
    factor: int
    source: str
    typical_radius_px: float
    def __init__(self, factor: _Optional[int] = ..., source: _Optional[str] = ..., typical_radius_px: _Optional[float] = ...) -> None: ...

class MovieQuality(_message.Message):
    __slots__ = ("linked_fraction", "contrast_to_noise", "trustworthy", "warnings")
    LINKED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    CONTRAST_TO_NOISE_FIELD_NUMBER: _ClassVar[int]
    TRUSTWORTHY_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    linked_fraction: float
    contrast_to_noise: float
    trustworthy: bool
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, linked_fraction: _Optional[float] = ..., contrast_to_noise: _Optional[float] = ..., trustworthy: _Optional[bool] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class AnalyzeMovieResponse(_message.Message):
    __slots__ = ("progress", "labels", "table", "summary")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    labels: LabelChunk
    table: TablePart
    summary: MovieSummary
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., labels: _Optional[_Union[LabelChunk, _Mapping]] = ..., table: _Optional[_Union[TablePart, _Mapping]] = ..., summary: _Optional[_Union[MovieSummary, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[_common_pb2.ModelInfo, _Mapping]]] = ...) -> None: ...

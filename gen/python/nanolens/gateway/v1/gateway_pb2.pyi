from nanolens.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AnalysisKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANALYSIS_KIND_UNSPECIFIED: _ClassVar[AnalysisKind]
    ANALYSIS_KIND_SPECTRA: _ClassVar[AnalysisKind]
    ANALYSIS_KIND_SPECTRAL_MAP: _ClassVar[AnalysisKind]
    ANALYSIS_KIND_PARTICLE_SIZES: _ClassVar[AnalysisKind]
    ANALYSIS_KIND_LPEM_MOVIE: _ClassVar[AnalysisKind]
    ANALYSIS_KIND_SEM_IMAGE: _ClassVar[AnalysisKind]
ANALYSIS_KIND_UNSPECIFIED: AnalysisKind
ANALYSIS_KIND_SPECTRA: AnalysisKind
ANALYSIS_KIND_SPECTRAL_MAP: AnalysisKind
ANALYSIS_KIND_PARTICLE_SIZES: AnalysisKind
ANALYSIS_KIND_LPEM_MOVIE: AnalysisKind
ANALYSIS_KIND_SEM_IMAGE: AnalysisKind

class UploadHeader(_message.Message):
    __slots__ = ("key", "filename", "content_type")
    KEY_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    key: str
    filename: str
    content_type: str
    def __init__(self, key: _Optional[str] = ..., filename: _Optional[str] = ..., content_type: _Optional[str] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadResponse(_message.Message):
    __slots__ = ("object", "size_bytes", "sha256")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    object: _common_pb2.ObjectRef
    size_bytes: int
    sha256: str
    def __init__(self, object: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class CreateUploadUrlRequest(_message.Message):
    __slots__ = ("key", "filename", "expires_seconds")
    KEY_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_SECONDS_FIELD_NUMBER: _ClassVar[int]
    key: str
    filename: str
    expires_seconds: int
    def __init__(self, key: _Optional[str] = ..., filename: _Optional[str] = ..., expires_seconds: _Optional[int] = ...) -> None: ...

class CreateUploadUrlResponse(_message.Message):
    __slots__ = ("url", "object", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    URL_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    url: str
    object: _common_pb2.ObjectRef
    headers: _containers.ScalarMap[str, str]
    def __init__(self, url: _Optional[str] = ..., object: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...

class AnalyzeRequest(_message.Message):
    __slots__ = ("input", "analysis", "model_name", "model_version", "options", "force")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    INPUT_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    input: _common_pb2.ObjectRef
    analysis: AnalysisKind
    model_name: str
    model_version: str
    options: _containers.ScalarMap[str, str]
    force: bool
    def __init__(self, input: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., analysis: _Optional[_Union[AnalysisKind, str]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., options: _Optional[_Mapping[str, str]] = ..., force: _Optional[bool] = ...) -> None: ...

class AnalyzeResponse(_message.Message):
    __slots__ = ("job_id", "result", "result_json", "artifacts", "cached", "provenance")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    result: _common_pb2.ObjectRef
    result_json: str
    artifacts: _containers.RepeatedCompositeFieldContainer[_common_pb2.Artifact]
    cached: bool
    provenance: _common_pb2.Provenance
    def __init__(self, job_id: _Optional[str] = ..., result: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., result_json: _Optional[str] = ..., artifacts: _Optional[_Iterable[_Union[_common_pb2.Artifact, _Mapping]]] = ..., cached: _Optional[bool] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class AnalyzeProgress(_message.Message):
    __slots__ = ("stage", "done", "total", "particles_found", "tracks", "counts")
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PARTICLES_FOUND_FIELD_NUMBER: _ClassVar[int]
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    done: int
    total: int
    particles_found: int
    tracks: int
    counts: _containers.ScalarMap[str, int]
    def __init__(self, stage: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., particles_found: _Optional[int] = ..., tracks: _Optional[int] = ..., counts: _Optional[_Mapping[str, int]] = ...) -> None: ...

class AnalyzeStreamRequest(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: AnalyzeRequest
    def __init__(self, request: _Optional[_Union[AnalyzeRequest, _Mapping]] = ...) -> None: ...

class AnalyzeStreamResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: AnalyzeProgress
    result: AnalyzeResponse
    def __init__(self, progress: _Optional[_Union[AnalyzeProgress, _Mapping]] = ..., result: _Optional[_Union[AnalyzeResponse, _Mapping]] = ...) -> None: ...

class InlineItem(_message.Message):
    __slots__ = ("filename", "data")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    filename: str
    data: bytes
    def __init__(self, filename: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class AnalyzeManyRequest(_message.Message):
    __slots__ = ("id", "request", "inline")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    id: str
    request: AnalyzeRequest
    inline: InlineItem
    def __init__(self, id: _Optional[str] = ..., request: _Optional[_Union[AnalyzeRequest, _Mapping]] = ..., inline: _Optional[_Union[InlineItem, _Mapping]] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "message", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    field: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class AnalyzeManyResponse(_message.Message):
    __slots__ = ("id", "result", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    result: AnalyzeResponse
    error: ItemError
    def __init__(self, id: _Optional[str] = ..., result: _Optional[_Union[AnalyzeResponse, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServiceModels(_message.Message):
    __slots__ = ("service", "models")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    service: str
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelInfo]
    def __init__(self, service: _Optional[str] = ..., models: _Optional[_Iterable[_Union[_common_pb2.ModelInfo, _Mapping]]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[ServiceModels]
    def __init__(self, services: _Optional[_Iterable[_Union[ServiceModels, _Mapping]]] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("object",)
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    object: _common_pb2.ObjectRef
    def __init__(self, object: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ...) -> None: ...

class DownloadResponse(_message.Message):
    __slots__ = ("chunk", "size_bytes", "media_type")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    size_bytes: int
    media_type: str
    def __init__(self, chunk: _Optional[bytes] = ..., size_bytes: _Optional[int] = ..., media_type: _Optional[str] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("objects", "prefix", "bucket", "analysis", "options", "model_name", "model_version")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    objects: _containers.RepeatedCompositeFieldContainer[_common_pb2.ObjectRef]
    prefix: str
    bucket: str
    analysis: AnalysisKind
    options: _containers.ScalarMap[str, str]
    model_name: str
    model_version: str
    def __init__(self, objects: _Optional[_Iterable[_Union[_common_pb2.ObjectRef, _Mapping]]] = ..., prefix: _Optional[str] = ..., bucket: _Optional[str] = ..., analysis: _Optional[_Union[AnalysisKind, str]] = ..., options: _Optional[_Mapping[str, str]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id", "items")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    items: bool
    def __init__(self, job_id: _Optional[str] = ..., items: _Optional[bool] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class RetryJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class RetryJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("state", "page_size", "page_token")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    state: str
    page_size: int
    page_token: str
    def __init__(self, state: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class JobItem(_message.Message):
    __slots__ = ("object", "state", "attempts", "error", "result")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    object: _common_pb2.ObjectRef
    state: str
    attempts: int
    error: str
    result: _common_pb2.ObjectRef
    def __init__(self, object: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., state: _Optional[str] = ..., attempts: _Optional[int] = ..., error: _Optional[str] = ..., result: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "analysis", "options", "state", "created", "total", "pending", "running", "done", "failed", "cancelled", "items", "submitted_by")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_BY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    analysis: AnalysisKind
    options: _containers.ScalarMap[str, str]
    state: str
    created: str
    total: int
    pending: int
    running: int
    done: int
    failed: int
    cancelled: int
    items: _containers.RepeatedCompositeFieldContainer[JobItem]
    submitted_by: str
    def __init__(self, job_id: _Optional[str] = ..., analysis: _Optional[_Union[AnalysisKind, str]] = ..., options: _Optional[_Mapping[str, str]] = ..., state: _Optional[str] = ..., created: _Optional[str] = ..., total: _Optional[int] = ..., pending: _Optional[int] = ..., running: _Optional[int] = ..., done: _Optional[int] = ..., failed: _Optional[int] = ..., cancelled: _Optional[int] = ..., items: _Optional[_Iterable[_Union[JobItem, _Mapping]]] = ..., submitted_by: _Optional[str] = ...) -> None: ...

class SearchCollectionRequest(_message.Message):
    __slots__ = ("collection", "query", "k", "region", "where")
    class WhereEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    WHERE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    query: _common_pb2.ObjectRef
    k: int
    region: Region
    where: _containers.ScalarMap[str, str]
    def __init__(self, collection: _Optional[str] = ..., query: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., k: _Optional[int] = ..., region: _Optional[_Union[Region, _Mapping]] = ..., where: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Region(_message.Message):
    __slots__ = ("x", "y", "width", "height")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    width: int
    height: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("object", "score", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    object: _common_pb2.ObjectRef
    score: float
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, object: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., score: _Optional[float] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SearchCollectionResponse(_message.Message):
    __slots__ = ("hits", "n_items", "model", "query_in_collection", "similar_above", "nothing_similar")
    HITS_FIELD_NUMBER: _ClassVar[int]
    N_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUERY_IN_COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SIMILAR_ABOVE_FIELD_NUMBER: _ClassVar[int]
    NOTHING_SIMILAR_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    n_items: int
    model: _common_pb2.ModelInfo
    query_in_collection: bool
    similar_above: float
    nothing_similar: bool
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., n_items: _Optional[int] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., query_in_collection: _Optional[bool] = ..., similar_above: _Optional[float] = ..., nothing_similar: _Optional[bool] = ...) -> None: ...

from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LongDocuments(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LONG_DOCUMENTS_TRUNCATE: _ClassVar[LongDocuments]
    LONG_DOCUMENTS_CHUNK: _ClassVar[LongDocuments]
LONG_DOCUMENTS_TRUNCATE: LongDocuments
LONG_DOCUMENTS_CHUNK: LongDocuments

class Media(_message.Message):
    __slots__ = ("data", "uri")
    DATA_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    uri: str
    def __init__(self, data: _Optional[bytes] = ..., uri: _Optional[str] = ...) -> None: ...

class Video(_message.Message):
    __slots__ = ("frames", "uri", "fps")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[Media]
    uri: str
    fps: float
    def __init__(self, frames: _Optional[_Iterable[_Union[Media, _Mapping]]] = ..., uri: _Optional[str] = ..., fps: _Optional[float] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("id", "text", "images", "videos")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    VIDEOS_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    images: _containers.RepeatedCompositeFieldContainer[Media]
    videos: _containers.RepeatedCompositeFieldContainer[Video]
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., images: _Optional[_Iterable[_Union[Media, _Mapping]]] = ..., videos: _Optional[_Iterable[_Union[Video, _Mapping]]] = ...) -> None: ...

class RerankRequest(_message.Message):
    __slots__ = ("query", "documents", "instruction", "top_n", "return_documents", "long_documents", "max_tokens_per_doc", "chunk_overlap")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    RETURN_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    LONG_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_PER_DOC_FIELD_NUMBER: _ClassVar[int]
    CHUNK_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    query: Item
    documents: _containers.RepeatedCompositeFieldContainer[Item]
    instruction: str
    top_n: int
    return_documents: bool
    long_documents: LongDocuments
    max_tokens_per_doc: int
    chunk_overlap: int
    def __init__(self, query: _Optional[_Union[Item, _Mapping]] = ..., documents: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., instruction: _Optional[str] = ..., top_n: _Optional[int] = ..., return_documents: _Optional[bool] = ..., long_documents: _Optional[_Union[LongDocuments, str]] = ..., max_tokens_per_doc: _Optional[int] = ..., chunk_overlap: _Optional[int] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("index", "count", "start", "end")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    index: int
    count: int
    start: int
    end: int
    def __init__(self, index: _Optional[int] = ..., count: _Optional[int] = ..., start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class RerankResult(_message.Message):
    __slots__ = ("index", "id", "score", "logit", "document", "chunk")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LOGIT_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    index: int
    id: str
    score: float
    logit: float
    document: Item
    chunk: Chunk
    def __init__(self, index: _Optional[int] = ..., id: _Optional[str] = ..., score: _Optional[float] = ..., logit: _Optional[float] = ..., document: _Optional[_Union[Item, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "images", "queue_ms", "preprocessing_ms", "inference_ms", "video_frames", "computed_tokens", "feature_cache_hits", "feature_cache_misses")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_MS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FRAMES_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_CACHE_MISSES_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    images: int
    queue_ms: float
    preprocessing_ms: float
    inference_ms: float
    video_frames: int
    computed_tokens: int
    feature_cache_hits: int
    feature_cache_misses: int
    def __init__(self, input_tokens: _Optional[int] = ..., images: _Optional[int] = ..., queue_ms: _Optional[float] = ..., preprocessing_ms: _Optional[float] = ..., inference_ms: _Optional[float] = ..., video_frames: _Optional[int] = ..., computed_tokens: _Optional[int] = ..., feature_cache_hits: _Optional[int] = ..., feature_cache_misses: _Optional[int] = ...) -> None: ...

class RerankResponse(_message.Message):
    __slots__ = ("results", "model", "usage")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RerankResult]
    model: str
    usage: Usage
    def __init__(self, results: _Optional[_Iterable[_Union[RerankResult, _Mapping]]] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("inputs", "instruction", "dimensions")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[Item]
    instruction: str
    dimensions: int
    def __init__(self, inputs: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., instruction: _Optional[str] = ..., dimensions: _Optional[int] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embeddings", "model", "usage")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    model: str
    usage: Usage
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LoadedModel(_message.Message):
    __slots__ = ("name", "kind", "dimension", "max_length", "dtype", "device", "adapter")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    dimension: int
    max_length: int
    dtype: str
    device: str
    adapter: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., dimension: _Optional[int] = ..., max_length: _Optional[int] = ..., dtype: _Optional[str] = ..., device: _Optional[str] = ..., adapter: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model", "models", "max_documents", "max_batch_tokens", "max_message_bytes", "prefix_reuse")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PREFIX_REUSE_FIELD_NUMBER: _ClassVar[int]
    model: str
    models: _containers.RepeatedCompositeFieldContainer[LoadedModel]
    max_documents: int
    max_batch_tokens: int
    max_message_bytes: int
    prefix_reuse: bool
    def __init__(self, model: _Optional[str] = ..., models: _Optional[_Iterable[_Union[LoadedModel, _Mapping]]] = ..., max_documents: _Optional[int] = ..., max_batch_tokens: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., prefix_reuse: _Optional[bool] = ...) -> None: ...

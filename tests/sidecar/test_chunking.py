"""Long documents: chunked into overlapping windows scored alone (best window wins), or cut to a length."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from sidecar._proto.rerank.v1 import reranker_pb2 as pb
from sidecar.errors import SidecarError
from sidecar.scheduler import Engine
from sidecar.settings import Settings
from sidecar.types import ItemInput, MediaRef, RerankInput
from tests.conftest import png_bytes
from tests.reference import reference_logit

QUERY = "where is the red bicycle with a basket"
WORDS = "garden river coffee table window phone camera jacket lamp shoe".split()
LONG = (
    " ".join(WORDS[i % len(WORDS)] + str(i) for i in range(400))
    + " the red bicycle with a basket is here. "
    + (" ".join(WORDS[(i * 7) % len(WORDS)] for i in range(300)))
)  # about 1,600 tokens; the answer sits in the middle
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def engine(reranker):
    engine = Engine(Settings(max_chunks_per_document=12), reranker)
    yield engine
    engine.close()


def rerank(engine: Engine, documents: list[ItemInput], **options):
    return asyncio.run(engine.rerank(RerankInput(ItemInput(text=QUERY), tuple(documents), **options)))


def test_a_long_document_scores_as_its_best_window_alone(engine, tiny_loaded):
    model, processor = tiny_loaded
    outcome = rerank(engine, [ItemInput(text=LONG)], long_documents="chunk", max_tokens_per_doc=200, chunk_overlap=25)
    chunk = outcome.chunks[0]
    assert 5 <= chunk.count <= 12 and 0 <= chunk.index < chunk.count
    windows = [text for text in _windows(engine, LONG, 200, 25)]
    assert len(windows) == chunk.count
    oracle = [reference_logit(model, processor, {"text": QUERY}, {"text": w}) for w in windows]
    assert max(oracle) - min(oracle) > 100 * TOLERANCE  # windows really differ
    assert abs(outcome.logits[0] - max(oracle)) < TOLERANCE
    assert abs(oracle[chunk.index] - max(oracle)) < TOLERANCE
    assert LONG[chunk.start : chunk.end] == windows[chunk.index]


def _windows(engine: Engine, text: str, window: int, overlap: int) -> list[str]:
    """The windows' texts, from the spans the engine reports for each of a document's windows."""
    spans = engine.reranker.prompt_tokenizer.spans_head(text, 10**6)[0]
    starts = list(range(0, max(len(spans) - overlap, 1), window - overlap))[:12]
    return [text[spans[a][0] : spans[min(a + window, len(spans)) - 1][1]] for a in starts]


def test_windows_overlap_and_cover_the_text_in_order(engine):
    outcome = rerank(engine, [ItemInput(text=LONG)], long_documents="chunk", max_tokens_per_doc=300)
    windows = _windows(engine, LONG, 300, 300 // 8)
    assert outcome.chunks[0].count == len(windows)
    starts = [LONG.index(w) for w in windows]
    assert starts == sorted(starts) and starts[0] == 0
    assert all(LONG.index(w) + len(w) > LONG.index(n) for w, n in zip(windows, windows[1:]))  # they overlap
    assert LONG.endswith(windows[-1])


def test_short_documents_are_unchanged_by_chunking(engine):
    documents = [ItemInput(text=t) for t in ("a red bicycle", "a cat", "")] + [
        ItemInput(text="lamp", images=(MediaRef(data=png_bytes(64, 48, seed=5)),))
    ]
    plain = rerank(engine, documents)
    chunked = rerank(engine, documents, long_documents="chunk")
    assert all(abs(a - b) < 1e-5 for a, b in zip(plain.logits, chunked.logits, strict=True))
    assert [(c.index, c.count) for c in chunked.chunks] == [(0, 1)] * 4
    assert plain.chunks == []


def test_chunked_windows_share_the_query_prefix(engine):
    outcome = rerank(
        engine, [ItemInput(text=LONG), ItemInput(text="x")], long_documents="chunk", max_tokens_per_doc=200
    )
    assert outcome.timings.computed_tokens < outcome.timings.input_tokens


def test_windows_beyond_the_cap_are_not_scored(engine):
    outcome = rerank(engine, [ItemInput(text=LONG * 4)], long_documents="chunk", max_tokens_per_doc=100)
    chunk = outcome.chunks[0]
    assert chunk.count == 12 and chunk.end < len(LONG * 4) // 2


def test_max_tokens_per_doc_cuts_the_text_when_truncating(engine, tiny_loaded):
    model, processor = tiny_loaded
    outcome = rerank(engine, [ItemInput(text=LONG)], max_tokens_per_doc=50)
    spans = engine.reranker.prompt_tokenizer.spans_head(LONG, 50)[0]
    expected = reference_logit(model, processor, {"text": QUERY}, {"text": LONG[: spans[49][1]]})
    assert abs(outcome.logits[0] - expected) < TOLERANCE
    assert outcome.chunks == []


def test_chunks_over_grpc_name_the_winning_window(client):
    request = pb.RerankRequest(
        query=pb.Item(text=QUERY),
        documents=[pb.Item(text="short"), pb.Item(text=LONG)],
        long_documents=pb.LONG_DOCUMENTS_CHUNK,
        max_tokens_per_doc=250,
    )
    response = client._stub.Rerank(request, timeout=60)
    by_index = {r.index: r for r in response.results}
    assert by_index[0].chunk.count == 1 and (by_index[0].chunk.start, by_index[0].chunk.end) == (0, 5)
    long_chunk = by_index[1].chunk
    assert long_chunk.count > 1 and 0 <= long_chunk.start < long_chunk.end <= len(LONG)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"chunk_overlap": 10}, "chunk_overlap applies only when long_documents is chunk"),
        (
            {"long_documents": pb.LONG_DOCUMENTS_CHUNK, "max_tokens_per_doc": 50, "chunk_overlap": 50},
            "chunk_overlap (50) must be smaller than max_tokens_per_doc (50)",
        ),
        ({"long_documents": 7}, "long_documents 7 is not a LongDocuments value"),
    ],
)
def test_bad_chunking_options_are_invalid(client, fields, message):
    request = pb.RerankRequest(query=pb.Item(text="q"), documents=[pb.Item(text="d")], **fields)
    with pytest.raises(grpc.RpcError) as info:
        client._stub.Rerank(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in info.value.details()


def test_truncate_false_with_chunking_still_refuses_what_cannot_fit(engine):
    """A window is made to fit; a document that cannot fit even cut (the query fills it) is refused."""
    with pytest.raises(SidecarError, match="truncate"):
        asyncio.run(
            engine.rerank(
                RerankInput(
                    ItemInput(text="q " * 20000), (ItemInput(text=LONG),), truncate=False, long_documents="chunk"
                )
            )
        )

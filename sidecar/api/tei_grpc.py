"""TEI's gRPC rerank services (`tei.v1.Rerank`, `tei.v1.Info`) from the same engine and port as `rerank.v1`.

Haystack's `HuggingFaceTEIRanker(use_grpc=True)` and other TEI clients call these unchanged. The
request maps onto the engine as TEI's HTTP route does (`sidecar.api.dialects.tei`), with TEI's
gRPC defaults: `truncate` is a plain proto3 bool, so a pair over the model's length is an error
unless the client sets it (TEI's gRPC server ignores `--auto-truncate` too). Errors take their
status from the one table `sidecar.api.status.GRPC_CODES`; an empty `texts` gets empty `ranks`.
Each call is recorded like the face's own (`sidecar.api.observe`: log line, metrics, span) as route
`tei.v1.Rerank/Rerank`, dialect `tei`.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from sidecar import metrics
from sidecar._proto.tei.v1 import tei_pb2 as tei
from sidecar._proto.tei.v1 import tei_pb2_grpc as tei_grpc
from sidecar.api.convert import ranked, sigmoid
from sidecar.api.dialects.items import parse_media_string
from sidecar.api.dialects.tei import tei_info
from sidecar.api.observe import RequestRecord, close
from sidecar.api.status import GRPC_CODES
from sidecar.errors import SidecarError, invalid
from sidecar.types import RerankInput, Timings

RERANK_SERVICE = tei.DESCRIPTOR.services_by_name["Rerank"].full_name  # tei.v1.Rerank
INFO_SERVICE = tei.DESCRIPTOR.services_by_name["Info"].full_name  # tei.v1.Info
SERVICE_NAMES = (RERANK_SERVICE, INFO_SERVICE)
ROUTE = f"{RERANK_SERVICE}/Rerank"  # the route label of its records (rerank.v1's is plain "Rerank")
_DIRECTIONS = {tei.TRUNCATION_DIRECTION_RIGHT: "right", tei.TRUNCATION_DIRECTION_LEFT: "left"}


def add_tei_services(runtime, server: grpc.aio.Server) -> tuple[str, ...]:
    """Register `tei.v1.Rerank` and `tei.v1.Info` on `server`; returns their names (for health, reflection)."""
    tei_grpc.add_RerankServicer_to_server(TeiRerankService(runtime), server)
    tei_grpc.add_InfoServicer_to_server(TeiInfoService(runtime), server)
    return SERVICE_NAMES


def rerank_input(request: tei.RerankRequest, max_documents: int) -> RerankInput:
    """A `tei.v1.RerankRequest` as the engine's input; media strings are read as over HTTP."""
    query = parse_media_string(request.query, "query")
    if query.is_empty():
        raise invalid("query has no text or image")
    if len(request.texts) > max_documents:
        raise invalid(f"texts has {len(request.texts)} entries; this server accepts at most {max_documents}")
    if request.truncation_direction not in _DIRECTIONS:
        raise invalid(f"truncation_direction {request.truncation_direction} is not a TruncationDirection")
    return RerankInput(
        query=query,
        documents=tuple(parse_media_string(text, f"texts[{i}]") for i, text in enumerate(request.texts)),
        truncate=request.truncate,
        truncation_direction=_DIRECTIONS[request.truncation_direction],
        documents_field="texts",
    )


def rerank_response(
    request: tei.RerankRequest, logits: list[float], timings: Timings, start: float
) -> tei.RerankResponse:
    """Ranks best first (probabilities, or logits with `raw_scores`), and TEI's usage metadata."""
    ranks = []
    for index in ranked(logits, 0):
        rank = tei.Rank(index=index, score=logits[index] if request.raw_scores else sigmoid(logits[index]))
        if request.return_text:
            rank.text = request.texts[index]
        ranks.append(rank)
    chars = len(request.query) * len(request.texts) + sum(len(text) for text in request.texts)
    metadata = tei.Metadata(
        compute_chars=chars,
        compute_tokens=timings.computed_tokens,
        total_time_ns=int((time.perf_counter() - start) * 1e9),
        tokenization_time_ns=int(timings.preprocessing_ms * 1e6),
        queue_time_ns=int(timings.queue_ms * 1e6),
        inference_time_ns=int(timings.inference_ms * 1e6),
    )
    return tei.RerankResponse(ranks=ranks, metadata=metadata)


class TeiRerankService(tei_grpc.RerankServicer):
    """`tei.v1.Rerank/Rerank` over the shared engine."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime  # sidecar.server.Runtime: settings, engine (None until loaded)

    async def Rerank(self, request: tei.RerankRequest, context: grpc.aio.ServicerContext) -> tei.RerankResponse:
        start = time.perf_counter()
        record = RequestRecord(face="grpc", route=ROUTE, dialect="tei", model="reranker", documents=len(request.texts))
        tracing = self.runtime.tracing
        try:
            engine = self.runtime.ready_engine()
            engine.require("reranker")
            parsed = rerank_input(request, self.runtime.settings.max_documents)
            remaining = context.time_remaining()
            deadline = time.monotonic() + remaining if remaining is not None else None
            with metrics.in_engine():
                outcome = await self.runtime.run(engine.rerank(parsed, deadline))
            record.timings = outcome.timings
            response = rerank_response(request, outcome.logits, outcome.timings, start)
        except SidecarError as exc:
            close(record, exc.kind.value, tracing)
            await context.abort(GRPC_CODES[exc.kind], exc.message)
        except asyncio.CancelledError:  # the caller went away or its deadline passed
            close(record, "cancelled", tracing)
            raise
        close(record, "ok", tracing)
        return response


class TeiInfoService(tei_grpc.InfoServicer):
    """`tei.v1.Info/Info`: TEI's description of the served model (answered while loading too)."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime

    async def Info(self, request: tei.InfoRequest, context: grpc.aio.ServicerContext) -> tei.InfoResponse:
        info = tei_info(self.runtime.model_info(), self.runtime.settings)
        return tei.InfoResponse(
            version=info["version"],
            model_id=info["model_id"],
            model_dtype=info["model_dtype"],
            model_type=tei.MODEL_TYPE_RERANKER,
            max_concurrent_requests=info["max_concurrent_requests"],
            max_input_length=info["max_input_length"],
            max_batch_tokens=info["max_batch_tokens"],
            max_batch_requests=info["max_batch_requests"],
            max_client_batch_size=info["max_client_batch_size"],
            tokenization_workers=info["tokenization_workers"],
        )

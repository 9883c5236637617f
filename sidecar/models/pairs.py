"""A rerank request's query-document pairs as token ids: prompt, truncation and the per-pair cap.

Each pair is the reference prompt (`sidecar.prompts`) encoded part by part (`tokens.PromptTokenizer`),
so the shared head (system, instruction, query) is encoded once per request and every document only
adds its own ids. Truncation reproduces the reference rule on the pair minus its final 5 tokens:
special tokens (markers, image and video tokens) are all kept, and the first
`max_length - specials` ordinary tokens. Only as many ordinary tokens as can be kept are encoded.

Per request the caller may ask for `truncate=False` (an overlong pair is an error, as TEI answers)
or `direction="left"` (the document keeps its last ordinary tokens instead of its first; the
prompt and query keep the reference rule). Whatever the options, a pair that still holds more than
`max_pair_tokens` ids (images, frames and special tokens are never truncated) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.errors import Kind, SidecarError
from sidecar.models.tokens import Part, PromptTokenizer
from sidecar.models.visuals import ProcessedItem
from sidecar.prompts import DOCUMENT_LEAD, KEPT_TAIL_TOKENS, RERANK_MAX_LENGTH, TAIL, rerank_head, side


@dataclass(frozen=True)
class PairLimits:
    """How a request's pairs are cut, chunked and capped."""

    max_length: int = RERANK_MAX_LENGTH  # the reference's truncation length (final 5 tokens aside)
    max_pair_tokens: int = 32768  # hard cap on a pair after truncation
    truncate: bool = True  # False: a pair over max_length is an error instead of being cut
    direction: str = "right"  # "right": keep the first ordinary tokens (reference); "left": the document's last
    chunk: bool = False  # split long document text into overlapping windows, one pair each
    max_tokens_per_doc: int = 0  # text tokens per document (truncate) or per window (chunk); 0 = what fits
    chunk_overlap: int = 0  # tokens shared by consecutive windows; 0 = an eighth of the window
    max_chunks: int = 16  # windows per document; text past them is not scored


@dataclass(frozen=True)
class Chunk:
    """Which window of a document a pair scores: its position, the document's count, its text span."""

    index: int
    count: int
    start: int  # characters of the document's text, [start, end)
    end: int


@dataclass
class Pair:
    """One pair's ids: `head` (shared by every pair of the request that keeps it whole) + `rest`."""

    head: list[int]
    rest: list[int]
    document: int = 0  # the document (request position) this pair scores
    chunk: Chunk | None = None  # the window of it, when documents are chunked

    def __len__(self) -> int:
        return len(self.head) + len(self.rest)

    def ids(self) -> list[int]:
        return self.head + self.rest


@dataclass
class _Encoded:
    ids: list[int]
    ordinary: int  # ids that are not special tokens


def side_parts(tok: PromptTokenizer, item: ProcessedItem) -> list[Part]:
    """One side (query or document) as parts: videos, then images, then text; "NULL" when empty."""
    return tok.parts(side(item.text, [visual.placeholder for visual in item.visuals]))


class PairBuilder:
    """Builds the pairs of one request: one `Pair` per document (per window when chunking), in order."""

    def __init__(self, tok: PromptTokenizer, limits: PairLimits) -> None:
        self.tok = tok
        self.limits = limits
        self._tail = self._encode_runs(tok.template(TAIL), wanted=KEPT_TAIL_TOKENS).ids

    def build(
        self, query: ProcessedItem, documents: list[ProcessedItem], instruction: str, labels: list[str]
    ) -> list[Pair]:
        """The pairs of every document, in order: one each, or one per window when chunking."""
        request = self.start(query, instruction)
        return [
            pair for i, (d, label) in enumerate(zip(documents, labels)) for pair in self.pairs(request, i, d, label)
        ]

    def start(self, query: ProcessedItem, instruction: str) -> _Request:
        """What every pair of a request shares: the head (system, instruction, query), encoded once."""
        tok, budget = self.tok, self.limits.max_length
        runs = tok.runs(tok.parts(rerank_head(instruction, side(query.text, [v.placeholder for v in query.visuals]))))
        open_run = tok.normalize(runs.pop().text) if runs[-1].special is None else ""
        head = self._encode_runs(runs, budget)
        carry = ""  # the end of the open run, encoded again with each document's first run
        if open_run:
            wanted = budget - head.ordinary
            _, complete = tok.encode_head(open_run, wanted + 1)
            if complete:
                split = tok.stable_split(open_run, DOCUMENT_LEAD)
                head = _join(head, self._counted(tok.encode(open_run[:split])))
                carry = open_run[split:]
            else:  # the query alone fills the budget: documents keep only their special tokens
                head = _join(head, self._encode_runs([Part(text=open_run)], wanted))
        return _Request(head, carry, {})

    def pairs(self, request: _Request, index: int, document: ProcessedItem, label: str) -> list[Pair]:
        """The pairs of one document (request position `index`): one, or one per window when chunking."""
        pairs = []
        for text, chunk in self._windows(request, document):
            item = ProcessedItem(text, document.visuals)
            where = label if chunk is None or chunk.count == 1 else f"{label} (window {chunk.index})"
            pair = self._pair(request, item, where)
            pair.document, pair.chunk = index, chunk
            pairs.append(pair)
        return pairs

    def text_document_head(self, request: _Request) -> list[int]:
        """The head a pair with a plain text document keeps: the request's head, or (when the query
        alone passes the budget) its truncated copy that every such pair shares."""
        try:
            return self._pair(request, ProcessedItem("", []), "documents").head
        except SidecarError:  # no text document fits beside this query: each pair reports it by name
            return request.head.ids

    def _pair(self, request: _Request, document: ProcessedItem, label: str) -> Pair:
        tok, head = self.tok, request.head
        lead = [Part(text=request.carry + DOCUMENT_LEAD)]
        runs = tok.runs(lead + side_parts(tok, document))
        room = self._room(request, runs, document)  # ordinary tokens this document's side may keep
        body = self._encode_runs(runs, room)
        if self.limits.direction == "left" and document.text and len(head.ids) + len(body.ids) > self.limits.max_length:
            body = self._keep_text_end(tok.runs(lead + side_parts(tok, ProcessedItem("", document.visuals))),
                                       document.text, room)  # fmt: skip
        return self._cut(head, body, label, request.truncated_heads)

    def _room(self, request: _Request, runs: list[Part], document: ProcessedItem) -> int:
        specials = sum(1 for r in runs if r.special is not None) + self.tok.count_markers(document.text)
        return self.limits.max_length - len(request.head.ids) - specials

    # ---- long documents --------------------------------------------------------------------------

    def _windows(self, request: _Request, document: ProcessedItem) -> list[tuple[str, Chunk | None]]:
        """The document's text as scored: whole, cut to max_tokens_per_doc, or as overlapping windows
        (token-aligned spans of its text, each scored as the document's text on its own)."""
        limits, text = self.limits, document.text
        whole = [(text, Chunk(0, 1, 0, len(text)) if limits.chunk else None)]
        if not text or not (limits.chunk or limits.max_tokens_per_doc):
            return whole
        lead = Part(text=request.carry + DOCUMENT_LEAD)
        runs = self.tok.runs([lead] + side_parts(self.tok, ProcessedItem("", document.visuals)))
        fits = self._room(request, runs, document) - len(self.tok.encode(lead.text)) - 1
        window = min(limits.max_tokens_per_doc or fits, fits) if limits.chunk else limits.max_tokens_per_doc
        if window < 1:  # nothing of the text fits beside the query: the reference rule alone
            return whole
        if not limits.chunk:
            spans, complete = self.tok.spans_head(text, window)
            return [(text if complete and len(spans) <= window else text[: spans[window - 1][1]], None)]
        overlap = min(limits.chunk_overlap or window // 8, window - 1)
        step = window - overlap
        spans, complete = self.tok.spans_head(text, window + step * (limits.max_chunks - 1))
        if complete and len(spans) <= window:
            return whole
        starts = list(range(0, max(len(spans) - overlap, 1), step))[: limits.max_chunks]
        bounds = [(spans[a][0], spans[min(a + window, len(spans)) - 1][1]) for a in starts]
        return [(text[a:b], Chunk(k, len(bounds), a, b)) for k, (a, b) in enumerate(bounds)]

    # ---- truncation ------------------------------------------------------------------------------

    def _cut(self, head: _Encoded, body: _Encoded, label: str, truncated_heads: dict[int, list[int]]) -> Pair:
        """The reference rule on head + body (the final 5 tokens aside), then the per-pair cap."""
        limits = self.limits
        head_ids, rest = head.ids, body.ids
        length = len(head_ids) + len(rest)
        if length > limits.max_length:
            if not limits.truncate:
                raise SidecarError(
                    Kind.TOO_LARGE,
                    f"{label}: the query and this document need more than the model's {limits.max_length} "
                    "tokens (plus 5); send truncate: true to cut them, or shorten them",
                )
            keep = limits.max_length - (length - head.ordinary - body.ordinary)  # ordinary tokens kept
            if keep >= head.ordinary:
                rest = self._keep_ordinary(rest, keep - head.ordinary)
            else:
                if keep not in truncated_heads:
                    truncated_heads[keep] = self._keep_ordinary(head_ids, keep)
                head_ids, rest = truncated_heads[keep], [i for i in rest if i in self.tok.special_ids]
        pair = Pair(head_ids, rest + self._tail)
        if len(pair) > limits.max_pair_tokens:
            raise SidecarError(
                Kind.TOO_LARGE,
                f"{label}: the pair has {len(pair)} tokens after truncation (images, video frames and special "
                f"tokens are never cut), over the limit of {limits.max_pair_tokens} per pair (--max-pair-tokens)",
            )
        return pair

    def _keep_ordinary(self, ids: list[int], count: int) -> list[int]:
        """Every special id, and the first `count` ordinary ones, in order."""
        special = self.tok.special_ids
        kept = []
        for i in ids:
            if i in special:
                kept.append(i)
            elif count > 0:
                kept.append(i)
                count -= 1
        return kept

    def _keep_text_end(self, runs: list[Part], text: str, room: int) -> _Encoded:
        """The document side with its text cut from the start: the side's other parts whole, then the
        text's last ordinary ids that fit (its special ids all kept), spliced at the id level."""
        side = self._encode_runs(runs, self.limits.max_length)
        wanted = max(room - side.ordinary, 0)
        ids, complete = self.tok.encode_tail(text, wanted + 1)
        if not complete:
            markers = self.tok.markers_in(text)
            ids = markers[: len(markers) - sum(1 for i in ids if i in self.tok.special_ids)] + ids
        kept = self._keep_ordinary(ids[::-1], wanted)[::-1]
        return _join(side, self._counted(kept))

    # ---- encoding --------------------------------------------------------------------------------

    def _encode_runs(self, runs: list[Part], wanted: int) -> _Encoded:
        """Ids of `runs`, their text holding at least the first `wanted` + 1 ordinary ids overall.

        A text run's ordinary ids beyond those are left out (its special ids never are): whatever is
        left out lies past what the reference rule keeps, and the result is then over the limit.
        """
        pieces: list[list[int]] = []
        ordinary = 0
        for run in runs:
            if run.special is not None:
                pieces.append([run.special])
                continue
            ids, complete = self.tok.encode_head(run.text, max(wanted - ordinary, 0) + 1)
            if not complete:
                markers = self.tok.markers_in(run.text)
                ids = ids + markers[sum(1 for i in ids if i in self.tok.special_ids) :]
            pieces.append(ids)
            ordinary += sum(1 for i in ids if i not in self.tok.special_ids)
        return _Encoded([i for piece in pieces for i in piece], ordinary)

    def _counted(self, ids: list[int]) -> _Encoded:
        return _Encoded(ids, sum(1 for i in ids if i not in self.tok.special_ids))


@dataclass
class _Request:
    """What every pair of one request shares (`PairBuilder.start`)."""

    head: _Encoded
    carry: str
    truncated_heads: dict[int, list[int]]  # the head cut for a given number of kept ordinary tokens


def _join(a: _Encoded, b: _Encoded) -> _Encoded:
    return _Encoded(a.ids + b.ids, a.ordinary + b.ordinary)

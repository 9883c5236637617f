"""Client-side BM25 sparse vectors for engines that store sparse vectors but do not tokenise (Qdrant).

What we compute, and why:
  * Tokens: lower-cased Unicode word runs (`\\w+`); no stemming, no stop words. Simple, language
    neutral, and identical at index and query time.
  * Token id: the first 4 bytes of BLAKE2b(token), masked to 31 bits. A stable hash needs no
    vocabulary file and survives process restarts (Python's `hash()` does not); collisions among
    2^31 ids are negligible for a lexical first stage.
  * Document weight of a token: the BM25 term-frequency part
        tf · (k1 + 1) / (tf + k1 · (1 − b + b · doc_len / avg_len))     (k1 = 1.2, b = 0.75)
  * Query weight: 1 per distinct token.
  * IDF: left to the engine. The Qdrant collection's sparse vector is created with
    `modifier=IDF`, so Qdrant multiplies each query token by its inverse document frequency,
    computed over the live collection. Query · document is then the BM25 score.
This is the scheme of fastembed's "Qdrant/bm25" model, without its stemmer and stop-word list.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

_TOKEN = re.compile(r"\w+", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens."""
    return _TOKEN.findall(text.lower())


def token_id(token: str) -> int:
    """A stable 31-bit id for a token."""
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=4).digest(), "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class Bm25Encoder:
    """Sparse BM25 encoder; `avg_len` is the average document length in tokens of the corpus."""

    k1: float = 1.2
    b: float = 0.75
    avg_len: float = 64.0

    @classmethod
    def fit(cls, texts: Iterable[str], k1: float = 1.2, b: float = 0.75) -> Bm25Encoder:
        """An encoder whose `avg_len` is that of `texts`."""
        lengths = [len(tokenize(t)) for t in texts]
        average = sum(lengths) / len(lengths) if lengths else 0.0
        return cls(k1=k1, b=b, avg_len=max(average, 1.0))

    def encode_document(self, text: str) -> tuple[list[int], list[float]]:
        """(indices, values) of a document: BM25 term-frequency weights."""
        tokens = tokenize(text)
        norm = self.k1 * (1 - self.b + self.b * len(tokens) / self.avg_len)
        weights: dict[int, float] = {}
        for token, tf in Counter(tokens).items():
            index = token_id(token)
            weights[index] = weights.get(index, 0.0) + tf * (self.k1 + 1) / (tf + norm)
        return list(weights), list(weights.values())

    def encode_query(self, text: str) -> tuple[list[int], list[float]]:
        """(indices, values) of a query: weight 1 per distinct token (the engine applies IDF)."""
        indices = list(dict.fromkeys(token_id(t) for t in tokenize(text)))
        return indices, [1.0] * len(indices)

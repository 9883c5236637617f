"""Prompt text -> token ids, exactly as the checkpoint's tokenizer would encode the whole prompt.

A Qwen prompt is template markers (special tokens such as `<|im_start|>`) and plain text between
them. The tokenizer splits its input at special tokens and encodes each plain run on its own, so a
prompt's ids are the markers' ids and each run's ids, in order. Building prompts this way buys three
things the whole-string call cannot give:

* **User text stays text.** Special-token strings inside a query or document (`<|im_end|>`...)
  are encoded as ordinary characters by default, so a document cannot inject prompt structure or
  untruncatable tokens. `special_tokens_in_text="reference"` recognises them instead, as the
  official reference does.
* **Work bounded by what is kept.** A pair keeps at most `max_length` ordinary tokens, so only
  that many need encoding: `encode_head` / `encode_tail` encode a window of the text that is cut
  where the tokenizer's own pre-tokenizer would cut, growing it only while more tokens are needed.
* **The query once per request.** `stable_split` finds where a run's ids stop depending on what
  follows, so the shared start is encoded once and only a few characters are encoded per pair.

Cuts are exact: a cut falls where a pre-token ends whatever follows (before a space that follows a
non-space, after a run of line breaks) and where NFC normalisation cannot join characters across
it. Only a text with no such place for thousands of characters (one enormous "word") falls back to
a cut inside a pre-token, whose ids are dropped for a margin of characters around the cut.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

SPECIAL_TEXT_MODES = ("plain", "reference")
_WINDOW_CHARS_PER_TOKEN = 6  # first guess of the characters a window needs per wanted token
_SAFE_CUT_SEARCH = 2048  # how far past a nominal cut a clean cut is looked for
_FALLBACK_MARGIN = 64  # characters whose ids are dropped beside a cut inside one pre-token


@dataclass(frozen=True)
class Part:
    """One piece of a prompt: a marker's id, or a run of plain text."""

    special: int | None = None
    text: str = ""


class PromptTokenizer:
    """Encodes prompt parts with an independent copy of the checkpoint's fast tokenizer.

    Thread-safe: the copy's settings are fixed at construction and never toggled per call.
    """

    def __init__(self, tokenizer, special_tokens_in_text: str = "plain") -> None:
        from tokenizers import Tokenizer

        if special_tokens_in_text not in SPECIAL_TEXT_MODES:
            raise ValueError(f"special_tokens_in_text must be one of {SPECIAL_TEXT_MODES}")
        self.mode = special_tokens_in_text
        self._backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        # "plain": special-token strings in text are encoded as ordinary characters.
        self._backend.encode_special_tokens = special_tokens_in_text == "plain"
        self._normalizer = self._backend.normalizer
        self._pre_tokenizer = self._backend.pre_tokenizer
        vocab = tokenizer.get_vocab()
        self.special_ids = frozenset(tokenizer.all_special_ids)
        self.marker_ids = {token: vocab[token] for token in tokenizer.all_special_tokens}
        self._marker_pattern = re.compile("(" + "|".join(re.escape(t) for t in self.marker_ids) + ")")
        # Added tokens the encoder still matches inside text (special ones only in "reference" mode):
        # it splits text at them before pre-tokenizing, so no cut may fall inside one.
        matched = [
            t.content for t in tokenizer.added_tokens_decoder.values() if self.mode == "reference" or not t.special
        ]
        self._added_pattern = re.compile(
            "|".join(re.escape(t) for t in sorted(matched, key=len, reverse=True)) or "(?!)"
        )

    # ---- prompt parts ----------------------------------------------------------------------------

    def parts(self, pieces: Iterable[tuple[str, bool]]) -> list[Part]:
        """Prompt pieces (text, trusted) from `sidecar.prompts` as parts: markers in trusted template
        text become marker ids; user text stays one text part."""
        parts: list[Part] = []
        for text, trusted in pieces:
            parts += self.template(text) if trusted else [Part(text=text)] if text else []
        return parts

    def template(self, text: str) -> list[Part]:
        """Trusted template text: its marker strings become marker ids."""
        parts = []
        for piece in self._marker_pattern.split(text):
            if piece in self.marker_ids:
                parts.append(Part(special=self.marker_ids[piece]))
            elif piece:
                parts.append(Part(text=piece))
        return parts

    def count_markers(self, text: str) -> int:
        """How many special-token strings a user text holds (each is one token in "reference" mode)."""
        return len(self._marker_pattern.findall(text)) if self.mode == "reference" else 0

    def markers_in(self, text: str) -> list[int]:
        """The ids of the special tokens a user text encodes to, in order ("reference" mode only)."""
        if self.mode != "reference":
            return []
        return [self.marker_ids[m] for m in self._marker_pattern.findall(text)]

    @staticmethod
    def runs(parts: Iterable[Part]) -> list[Part]:
        """Adjacent text parts joined into one run (the tokenizer encodes a run as a whole)."""
        merged: list[Part] = []
        for part in parts:
            if part.special is None and merged and merged[-1].special is None:
                merged[-1] = Part(text=merged[-1].text + part.text)
            elif part.special is not None or part.text:
                merged.append(part)
        return merged

    # ---- encoding --------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """All ids of a plain run (callers bound `text`, or use `encode_head`)."""
        return self._backend.encode(text, add_special_tokens=False).ids if text else []

    def encode_head(self, text: str, wanted: int) -> tuple[list[int], bool]:
        """The run's first ids, at least `wanted` ordinary ones unless the text ends first.

        Returns (ids, complete): complete is True when the ids are the whole run's.
        """
        ids, _, complete = self._head(text, wanted)
        return ids, complete

    def spans_head(self, text: str, wanted: int) -> tuple[list[tuple[int, int]], bool]:
        """Character spans (start, end) in `text` of the run's first tokens, as `encode_head` counts them."""
        _, spans, complete = self._head(text, wanted)
        return spans, complete

    def _head(self, text: str, wanted: int) -> tuple[list[int], list[tuple[int, int]], bool]:
        if not text:
            return [], [], True
        if wanted <= 0 and self.mode == "plain":
            return [], [], False
        size = max(256, wanted * _WINDOW_CHARS_PER_TOKEN)
        while True:
            if size >= len(text):
                encoding = self._backend.encode(text, add_special_tokens=False)
                return encoding.ids, encoding.offsets, True
            cut = self._clean_cut_forward(text, size)
            if cut is not None and cut < len(text):
                encoding = self._backend.encode(text[:cut], add_special_tokens=False)
                ids, spans = encoding.ids, encoding.offsets
            else:
                ids, spans = self._encode_window(text, 0, self._nfc_safe_forward(text, size), keep="head")
            if self._ordinary(ids) >= wanted:
                return ids, spans, False
            size *= 4

    def encode_tail(self, text: str, wanted: int) -> tuple[list[int], bool]:
        """The run's last ids, at least `wanted` ordinary ones unless the text starts first."""
        if not text:
            return [], True
        size = max(256, wanted * _WINDOW_CHARS_PER_TOKEN)
        while True:
            if size >= len(text):
                return self.encode(text), True
            start = len(text) - size
            cut = self._clean_cut_backward(text, start)
            if cut is not None and cut > 0:
                ids = self.encode(text[cut:])
            else:
                ids, _ = self._encode_window(text, self._nfc_safe_backward(text, start), len(text), keep="tail")
            if self._ordinary(ids) >= wanted:
                return ids, False
            size *= 4

    def stable_split(self, text: str, follower: str) -> int:
        """A character index i such that ids(text[:i]) + ids(text[i:] + follower + x) equal
        ids(text + follower + x) for every x: a pre-token boundary before the pre-token that reaches
        `follower`, where text[:i] on its own pre-tokenizes as it does in the whole.

        `text` must already be NFC-normalised and `follower` must start with a line break (which no
        normalisation joins to what precedes it).
        """
        found = list(self._added_pattern.finditer(text))  # the encoder splits at these first
        base = found[-1].end() if found else 0
        rest = text[base:]
        pieces = [span for _, span in self._pre_tokenizer.pre_tokenize_str(rest + follower)]
        # Boundaries before the pre-token that reaches `follower`, latest first. A whitespace pre-token
        # is split by what follows it (a space before a non-space starts the next one), so a boundary
        # counts only where the head alone pre-tokenizes as it does in the whole.
        for split in sorted({end for _, end in pieces if end <= len(rest)}, reverse=True):
            head = [span for span in pieces if span[1] <= split]
            if [span for _, span in self._pre_tokenizer.pre_tokenize_str(rest[:split])] == head:
                return base + split
        return base

    def normalize(self, text: str) -> str:
        return self._normalizer.normalize_str(text) if self._normalizer is not None else text

    def _ordinary(self, ids: list[int]) -> int:
        if self.mode == "plain":
            return len(ids)
        return sum(1 for i in ids if i not in self.special_ids)

    # ---- cuts ------------------------------------------------------------------------------------

    @staticmethod
    def _clean_cut_forward(text: str, at: int) -> int | None:
        """The first position >= at where a pre-token starts whatever follows (None if none near)."""
        limit = min(len(text), at + _SAFE_CUT_SEARCH)
        for i in range(max(at, 1), limit):
            if _clean_cut(text, i):
                return i
        return None

    @staticmethod
    def _clean_cut_backward(text: str, at: int) -> int | None:
        """The last position <= at where a pre-token starts whatever precedes it (None if none near)."""
        for i in range(min(at, len(text) - 1), max(0, at - _SAFE_CUT_SEARCH), -1):
            if _clean_cut(text, i):
                return i
        return None

    @staticmethod
    def _nfc_safe_forward(text: str, at: int) -> int:
        while at < len(text) and not _nfc_safe(text[at]):
            at += 1
        return at

    @staticmethod
    def _nfc_safe_backward(text: str, at: int) -> int:
        while at > 0 and not _nfc_safe(text[at]):
            at -= 1
        return at

    def _encode_window(self, text: str, start: int, end: int, keep: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids (and spans in `text`) of text[start:end] whose characters lie clear of the window's cut side.

        No clean cut was near: drop the pre-token at the cut and a margin of characters beside it
        (byte-pair merges inside one enormous pre-token reach only a few characters).
        """
        window = self.normalize(text[start:end])  # offsets below are in normalised characters
        encoding = self._backend.encode(window, add_special_tokens=False)
        pieces = self._pre_tokenizer.pre_tokenize_str(window)
        if keep == "head":
            limit = min(pieces[-1][1][0] if len(pieces) > 1 else len(window), len(window) - _FALLBACK_MARGIN)
            kept = [(i, o) for i, o in zip(encoding.ids, encoding.offsets) if o[1] <= limit]
        else:
            limit = max(pieces[0][1][1] if len(pieces) > 1 else 0, _FALLBACK_MARGIN)
            kept = [(i, o) for i, o in zip(encoding.ids, encoding.offsets) if o[0] >= limit]
        # Spans are in the normalised window's characters: exact unless normalisation changed its length.
        return [i for i, _ in kept], [(start + a, start + b) for _, (a, b) in kept]


def _clean_cut(text: str, i: int) -> bool:
    """Whether a pre-token starts at text[i] whatever surrounds the cut.

    Qwen's pre-tokenizer starts a new pre-token at a space that follows a non-space (no pattern
    continues a non-space run into a space), and after a line break followed by a non-space (no
    pattern continues a whitespace run past it). A space is ASCII and a line break is never
    composed with, so NFC cannot join characters across either cut.
    """
    if text[i] == " ":
        return not text[i - 1].isspace()
    return text[i - 1] in "\r\n" and not text[i].isspace()


def _nfc_safe(char: str) -> bool:
    """A character NFC never composes with the one before it: no mark, no Hangul vowel or final."""
    return (
        unicodedata.category(char)[0] != "M" and not (0x1160 <= ord(char) <= 0x11FF) and not unicodedata.combining(char)
    )

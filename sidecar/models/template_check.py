"""Does the checkpoint's chat template render prompts exactly as `sidecar.prompts` builds them?

The sidecar builds prompts from pieces itself (so it can split off the shared query prefix); the
official references render a conversation through the checkpoint's chat template. At load time a
sample conversation with every part kind (text, image, video, empty side) goes through both; a
difference means scores would drift from the reference's, so it is reported with its position.
"""

from __future__ import annotations

from sidecar.prompts import (
    IMAGE_PLACEHOLDER,
    RERANK_DEFAULT_INSTRUCTION,
    RERANK_SYSTEM,
    VIDEO_PLACEHOLDER,
    embed_instruction,
    embed_prompt,
    render,
    rerank_document,
    rerank_head,
    side,
)

_QUERY_TEXT = "a red shoe"
_DOCUMENT_TEXT = "Trail runner, size 42."


def _conversation(system: str, user: list[dict]) -> list[dict]:
    return [{"role": "system", "content": [{"type": "text", "text": system}]}, {"role": "user", "content": user}]


def _rerank_conversation(query: list[dict], document: list[dict]) -> list[dict]:
    """The reference's rerank conversation: instruction, then each side's parts after its label."""
    instruct = [{"type": "text", "text": "<Instruct>: " + RERANK_DEFAULT_INSTRUCTION}]
    query_label, document_label = {"type": "text", "text": "<Query>:"}, {"type": "text", "text": "\n<Document>:"}
    return _conversation(RERANK_SYSTEM, [*instruct, query_label, *query, document_label, *document])


def _rerank_pair() -> tuple[list[dict], str]:
    """A text+image query against a video+text document, as a conversation and as our prompt."""
    conversation = _rerank_conversation(
        [{"type": "image"}, {"type": "text", "text": _QUERY_TEXT}],
        [{"type": "video"}, {"type": "text", "text": _DOCUMENT_TEXT}],
    )
    ours = rerank_head(None, side(_QUERY_TEXT, [IMAGE_PLACEHOLDER])) + rerank_document(
        side(_DOCUMENT_TEXT, [VIDEO_PLACEHOLDER])
    )
    return conversation, render(ours)


def _rerank_empty_document() -> tuple[list[dict], str]:
    """A text query against an empty document (rendered "NULL")."""
    conversation = _rerank_conversation([{"type": "text", "text": _QUERY_TEXT}], [{"type": "text", "text": "NULL"}])
    return conversation, render(rerank_head(None, side(_QUERY_TEXT)) + rerank_document(side("")))


def _embed_item() -> tuple[list[dict], str]:
    conversation = _conversation(embed_instruction(None), [{"type": "image"}, {"type": "text", "text": _QUERY_TEXT}])
    return conversation, render(embed_prompt(None, side(_QUERY_TEXT, [IMAGE_PLACEHOLDER])))


def template_difference(processor, kind: str) -> str | None:
    """Where `processor`'s chat template and our prompt builder disagree, or None when they agree.

    `kind` is "reranker" or "embedding". A processor without a chat template cannot be checked
    and counts as agreeing (the sidecar never uses the template itself).
    """
    if not getattr(processor, "chat_template", None):
        return None
    samples = [_rerank_pair(), _rerank_empty_document()] if kind == "reranker" else [_embed_item()]
    for conversation, ours in samples:
        try:
            theirs = processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # a template that cannot render our message shapes at all
            return f"the chat template cannot render a sample conversation: {type(exc).__name__}: {exc}"
        if isinstance(theirs, list):
            theirs = theirs[0]
        if theirs != ours:
            at = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
            return (
                f"the chat template renders {theirs[max(0, at - 20) : at + 40]!r} where the sidecar builds "
                f"{ours[max(0, at - 20) : at + 40]!r} (character {at})"
            )
    return None

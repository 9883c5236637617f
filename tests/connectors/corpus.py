"""The test corpus, its queries and filters (in each engine's own filter language)."""

from __future__ import annotations

from connectors import Document

# Image references are paths under the sidecar's --media-root (the `media_root` fixture).
CORPUS = [
    Document(0, "red running shoes with a light sole", image="red.png", fields={"color": "red", "price": 60}),
    Document(1, "blue suede shoes", image="nested/blue.png", fields={"color": "blue", "price": 80}),
    Document(2, "red wool hat", image="red.png", fields={"color": "red", "price": 20}),
    Document(3, "green garden hose", fields={"color": "green", "price": 35}),
    Document(4, "red red red sneakers red", image=["red.png", "nested/blue.png"], fields={"color": "red", "price": 90}),
    Document(5, "yellow rain boots", fields={"color": "yellow", "price": 55}),
    Document(6, "blue denim jacket", image="nested/blue.png", fields={"color": "blue", "price": 120}),
    Document(7, "black leather shoes for the office", fields={"color": "black", "price": 150}),
]
BY_ID = {d.id: d for d in CORPUS}
QUERY = "red shoes"

# The same filters in each engine's own language.
FILTERS = {
    "red": {"qdrant": {"must": [{"key": "color", "match": {"value": "red"}}]}, "milvus": 'color == "red"'},
    "cheap": {"qdrant": {"must": [{"key": "price", "range": {"lt": 100}}]}, "milvus": "price < 100"},
    "none": {"qdrant": {"must": [{"key": "color", "match": {"value": "purple"}}]}, "milvus": 'color == "purple"'},
}
MATCHES = {"red": lambda d: d.fields["color"] == "red", "cheap": lambda d: d.fields["price"] < 100}


def engine_filter(connector, name: str):
    return FILTERS[name][connector.name]


def item_of(doc: Document) -> dict:
    return {"text": doc.text, "images": doc.images()}

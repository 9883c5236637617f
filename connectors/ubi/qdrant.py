"""The UBI log in Qdrant: payload-only collections (no vectors), one point per record (qdrant-client)."""

from __future__ import annotations

import uuid

from connectors.ubi.collections import FIELDS, CollectionUbiStore

_NAMESPACE = uuid.UUID("6f1c2a8e-53c4-4e59-9a55-0b1d8f0c7e21")


def _point_id(record_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, record_id))  # Qdrant ids are integers or UUIDs


class QdrantUbiStore(CollectionUbiStore):
    """`ubi_queries` / `ubi_events` as Qdrant collections (`wait=True` writes: durable and visible on return)."""

    product = "qdrant"

    def _ensure(self, collection: str) -> None:
        from qdrant_client import models

        if not self.client.collection_exists(collection):
            self.client.create_collection(collection, vectors_config={})
            for field in ("query_id", "experiment"):
                self.client.create_payload_index(collection, field, models.PayloadSchemaType.KEYWORD)

    def _put(self, collection: str, rows: list[dict[str, str]]) -> None:
        from qdrant_client import models

        points = [models.PointStruct(id=_point_id(r["record_id"]), vector={}, payload=r) for r in rows]
        self.client.upsert(collection, points=points, wait=True)

    def _get(self, collection: str, ids: list[str]) -> list[dict[str, str]]:
        points = self.client.retrieve(collection, ids=[_point_id(i) for i in ids], with_payload=True)
        return [{k: p.payload[k] for k in FIELDS} for p in points]

    def _find(self, collection: str, field: str | None, values: list[str]) -> list[dict[str, str]]:
        from qdrant_client import models

        condition = None
        if field is not None:
            condition = models.Filter(must=[models.FieldCondition(key=field, match=models.MatchAny(any=values))])
        rows, offset = [], None
        while True:
            points, offset = self.client.scroll(collection, scroll_filter=condition, limit=1000, offset=offset,
                                                with_payload=True)  # fmt: skip
            rows += [{k: p.payload[k] for k in FIELDS} for p in points]
            if offset is None:
                return rows

    def _count(self, collection: str) -> int:
        return int(self.client.count(collection, exact=True).count)

"""The UBI log in Weaviate (weaviate-client v4): collections without vectors, one object per record."""

from __future__ import annotations

import uuid

from connectors.ubi.collections import FIELDS, CollectionUbiStore

_NAMESPACE = uuid.UUID("0c4b8f2e-1d7a-4c1e-8e55-7b3f6a2d9e10")


def _class_name(collection: str) -> str:
    return "".join(part.capitalize() for part in collection.split("_"))  # Weaviate classes start upper-case


class WeaviateUbiStore(CollectionUbiStore):
    """`UbiQueries` / `UbiEvents` collections (inserts return once the objects are stored)."""

    product = "weaviate"

    def _ensure(self, collection: str) -> None:
        from weaviate.classes.config import Configure, DataType, Property

        name = _class_name(collection)
        if not self.client.collections.exists(name):
            properties = [Property(name=f, data_type=DataType.TEXT, skip_vectorization=True) for f in FIELDS]
            self.client.collections.create(name, properties=properties, vector_config=Configure.Vectors.self_provided())

    def _collection(self, collection: str):
        return self.client.collections.get(_class_name(collection))

    def _put(self, collection: str, rows: list[dict[str, str]]) -> None:
        from weaviate.classes.data import DataObject

        objects = [DataObject(properties=r, uuid=uuid.uuid5(_NAMESPACE, r["record_id"])) for r in rows]
        result = self._collection(collection).data.insert_many(objects)
        if result.has_errors:
            raise RuntimeError(f"{len(result.errors)} objects not written: {next(iter(result.errors.values()))}")

    def _get(self, collection: str, ids: list[str]) -> list[dict[str, str]]:
        found = self._collection(collection).query.fetch_objects_by_ids([uuid.uuid5(_NAMESPACE, i) for i in ids],
                                                                         limit=len(ids))  # fmt: skip
        return [{k: o.properties[k] for k in FIELDS} for o in found.objects]

    def _find(self, collection: str, field: str | None, values: list[str]) -> list[dict[str, str]]:
        from weaviate.classes.query import Filter

        handle = self._collection(collection)
        if field is None:
            return [{k: o.properties[k] for k in FIELDS} for o in handle.iterator()]
        rows, offset = [], 0
        where = Filter.by_property(field).contains_any(values)
        while True:
            page = handle.query.fetch_objects(filters=where, limit=1000, offset=offset).objects
            rows += [{k: o.properties[k] for k in FIELDS} for o in page]
            if len(page) < 1000:
                return rows
            offset += len(page)

    def _count(self, collection: str) -> int:
        return int(self._collection(collection).aggregate.over_all(total_count=True).total_count)

"""The UBI log in Milvus (pymilvus MilvusClient; Milvus Lite or a server): VARCHAR rows beside a 2-d placeholder
vector, since every Milvus collection needs one."""

from __future__ import annotations

import json

from connectors.ubi.collections import FIELDS, CollectionUbiStore

MAX_DOC = 65535  # VARCHAR limit: a served list of ~1,000 hits fits


class MilvusUbiStore(CollectionUbiStore):
    """`ubi_queries` / `ubi_events` as Milvus collections (each write is flushed: durable on return)."""

    product = "milvus"

    def _ensure(self, collection: str) -> None:
        from pymilvus import DataType

        if self.client.has_collection(collection):
            return
        schema = self.client.create_schema(auto_id=False)
        schema.add_field("record_id", DataType.VARCHAR, is_primary=True, max_length=512)
        for field in ("query_id", "experiment", "timestamp"):
            schema.add_field(field, DataType.VARCHAR, max_length=512)
        schema.add_field("doc", DataType.VARCHAR, max_length=MAX_DOC)
        schema.add_field("placeholder", DataType.FLOAT_VECTOR, dim=2)
        index = self.client.prepare_index_params()
        index.add_index("placeholder", index_type="FLAT", metric_type="L2")
        self.client.create_collection(collection, schema=schema, index_params=index)

    def _put(self, collection: str, rows: list[dict[str, str]]) -> None:
        too_long = [r["record_id"] for r in rows if len(r["doc"].encode()) > MAX_DOC]
        if too_long:
            raise ValueError(f"record {too_long[0]!r} is larger than Milvus's {MAX_DOC}-byte VARCHAR")
        self.client.insert(collection, [{**r, "placeholder": [0.0, 0.0]} for r in rows])
        self.client.flush(collection)

    def _get(self, collection: str, ids: list[str]) -> list[dict[str, str]]:
        return [{k: r[k] for k in FIELDS} for r in self.client.get(collection, ids=ids, output_fields=list(FIELDS))]

    def _find(self, collection: str, field: str | None, values: list[str]) -> list[dict[str, str]]:
        expression = f"{field} in {json.dumps(values)}" if field else 'record_id != ""'
        rows = []
        iterator = self.client.query_iterator(
            collection, filter=expression, output_fields=list(FIELDS), batch_size=1000
        )
        while batch := iterator.next():
            rows += [{k: r[k] for k in FIELDS} for r in batch]
        iterator.close()
        return rows

    def _count(self, collection: str) -> int:
        return int(self.client.query(collection, filter="", output_fields=["count(*)"])[0]["count(*)"])

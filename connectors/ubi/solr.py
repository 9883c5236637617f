"""The UBI log in Solr: cores (standalone) or collections (SolrCloud) from the `_default` configset, one document
per record (string fields `query_id`, `experiment`, `timestamp`, and `doc`, the stored JSON, added to the schema
when missing); writes are hard-committed."""

from __future__ import annotations

from typing import Any

from connectors.ubi.collections import CollectionUbiStore

_SOLR = {"record_id": "id", "query_id": "query_id", "experiment": "experiment", "timestamp": "timestamp",
         "doc": "doc"}  # fmt: skip
_FIELDS = [
    *(
        {"name": f, "type": "string", "stored": True, "multiValued": False}
        for f in ("query_id", "experiment", "timestamp")
    ),
    {"name": "doc", "type": "string", "indexed": False, "docValues": False, "stored": True, "multiValued": False},
]


def _row(doc: dict[str, Any]) -> dict[str, str]:
    return {field: str(doc.get(solr, "")) for field, solr in _SOLR.items()}


class SolrUbiStore(CollectionUbiStore):
    """`ubi_queries` / `ubi_events` in Solr (`url` ends with /solr; `client` a pysolr.Solr for its session)."""

    product = "solr"

    def __init__(self, url: str, *, configset: str = "_default", timeout: float = 30.0, **names: str) -> None:
        import pysolr

        from connectors.solr import SolrHttp

        self.configset = configset
        super().__init__(SolrHttp(url, pysolr.Solr(url, timeout=timeout), timeout), **names)

    def _ensure(self, collection: str) -> None:
        from connectors.solr import ensure_collection

        ensure_collection(self.client, collection, self.configset, recreate=False)
        have = {f["name"] for f in self.client("GET", f"{collection}/schema/fields")["fields"]}
        missing = [f for f in _FIELDS if f["name"] not in have]
        if missing:
            self.client("POST", f"{collection}/schema", {"add-field": missing})

    def _put(self, collection: str, rows: list[dict[str, str]]) -> None:
        docs = [{_SOLR[k]: v for k, v in r.items()} for r in rows]
        self.client("POST", f"{collection}/update", docs, commit="true")

    def _get(self, collection: str, ids: list[str]) -> list[dict[str, str]]:
        found: list[dict[str, str]] = []
        for start in range(0, len(ids), 200):
            answer = self.client("POST", f"{collection}/get", {"params": {"ids": ids[start : start + 200]}})
            found += [_row(d) for d in answer["response"]["docs"]]
        return found

    def _find(self, collection: str, field: str | None, values: list[str]) -> list[dict[str, str]]:
        params: dict[str, Any] = {"query": "*:*", "limit": 1000, "sort": "id asc"}
        if field is not None:
            params["filter"] = f"{{!terms f={_SOLR[field]}}}" + ",".join(v.replace(",", "\\,") for v in values)
        rows, cursor = [], "*"
        while True:
            answer = self.client("POST", f"{collection}/select", {**params, "params": {"cursorMark": cursor}})
            rows += [_row(d) for d in answer["response"]["docs"]]
            if answer["nextCursorMark"] == cursor:
                return rows
            cursor = answer["nextCursorMark"]

    def _count(self, collection: str) -> int:
        return int(self.client("GET", f"{collection}/select", q="*:*", rows=0)["response"]["numFound"])

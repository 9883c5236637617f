"""The document feature cache: pictures' vision-tower output, kept across requests.

A picture's features - the merged patch embeddings the language model reads in place of its image
tokens, and the deepstack features added to the early decoder layers at those tokens - depend on
the picture's bytes, the model and the resize rule, never on the query or the rest of the prompt.
Catalogue images recur across queries, so the engine keeps them, keyed by a hash of the bytes and
a fingerprint of the model and its image processing, in a least-recently-used store of two tiers:
the device tier holds tensors where the model runs; what it evicts moves to the host tier (CPU
memory), from which a later use copies it back. On a CPU-only server both are one tier.

A hit skips decoding, resizing, patchifying and the vision tower (the bytes are still fetched, to
be hashed). Lookups run on preparation threads and hand out the entry itself, so a prepared request
holds every entry its rows will use: an eviction between preparation and forward frees nothing it
needs. Tensors are created and moved between tiers only on the model thread.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

DEVICE, HOST = "device", "host"


@dataclass(eq=False)
class VisionFeatures:
    """One picture's vision-tower output."""

    embeds: torch.Tensor  # (tokens, hidden): what replaces the picture's tokens in the input embeddings
    deepstack: tuple[torch.Tensor, ...]  # per deepstack layer, (tokens, hidden): added to that layer's output

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.embeds, *self.deepstack))

    def to(self, device: torch.device) -> VisionFeatures:
        return VisionFeatures(self.embeds.to(device), tuple(t.to(device) for t in self.deepstack))


@dataclass(eq=False)
class CachedPicture:
    """A picture's features, with what preparation reads without touching them (its grid and tokens)."""

    key: str
    grid_thw: torch.Tensor  # (3,), on the CPU
    tokens: int  # the picture's tokens in a prompt
    features: VisionFeatures  # on the device or the host; only the model thread reads or moves it
    tier: str | None = None  # DEVICE, HOST, or None when not (or no longer) held by a cache

    @property
    def nbytes(self) -> int:
        return self.features.nbytes


@dataclass
class FeatureCacheStats:
    """Counters since start-up and what each tier holds now."""

    hits: dict[str, int] = field(default_factory=dict)  # per tier
    misses: int = 0
    bytes: dict[str, int] = field(default_factory=dict)  # per tier
    entries: dict[str, int] = field(default_factory=dict)  # per tier
    capacity: dict[str, int] = field(default_factory=dict)  # per tier, bytes


_LIVE: weakref.WeakSet[FeatureCache] = weakref.WeakSet()


def live_caches() -> list[FeatureCache]:
    """Every feature cache of this process."""
    return list(_LIVE)


def totals() -> FeatureCacheStats:
    """The counters and sizes of every feature cache of this process, summed per tier: what a metrics
    collector reads at scrape time (`rerank_sidecar_feature_cache_hits_total{tier}`,
    `..._misses_total`, `rerank_sidecar_feature_cache_bytes{tier}`)."""
    total = FeatureCacheStats()
    for cache in live_caches():
        stats = cache.stats()
        total.misses += stats.misses
        for mine, theirs in ((total.hits, stats.hits), (total.bytes, stats.bytes), (total.entries, stats.entries)):
            for tier, value in theirs.items():
                mine[tier] = mine.get(tier, 0) + value
        for tier, value in stats.capacity.items():
            total.capacity[tier] = total.capacity.get(tier, 0) + value
    return total


class FeatureCache:
    """A bounded two-tier LRU of `CachedPicture`s, for one model (thread-safe)."""

    def __init__(
        self,
        device: torch.device,
        device_bytes: int,
        host_bytes: int,
        fingerprint: str,
        separate_tiers: bool | None = None,
    ) -> None:
        """`separate_tiers`: None = two tiers unless `device` is the CPU (then one tier of both sizes)."""
        self.device = device
        self.fingerprint = fingerprint
        if separate_tiers is None:
            separate_tiers = device.type != "cpu"
        self.capacity = (
            {DEVICE: device_bytes, HOST: host_bytes} if separate_tiers else {HOST: device_bytes + host_bytes}
        )
        self.first_tier = next(iter(self.capacity))
        self._tiers: dict[str, OrderedDict[str, CachedPicture]] = {tier: OrderedDict() for tier in self.capacity}
        self._bytes = dict.fromkeys(self.capacity, 0)
        self._hits = dict.fromkeys(self.capacity, 0)
        self._misses = 0
        self._lock = threading.Lock()
        _LIVE.add(self)

    def key(self, content_digest: str) -> str:
        return f"{self.fingerprint}/{content_digest}"

    def lookup(self, content_digest: str) -> CachedPicture | None:
        """The cached picture with these bytes, marked recently used, or None (counted as a hit or a miss)."""
        key = self.key(content_digest)
        with self._lock:
            for tier, entries in self._tiers.items():
                entry = entries.get(key)
                if entry is not None:
                    entries.move_to_end(key)
                    self._hits[tier] += 1
                    return entry
            self._misses += 1
        return None

    def peek(self, key: str) -> CachedPicture | None:
        """The entry under `key` if held (not counted): a picture computed since its request was prepared."""
        with self._lock:
            return self._held(key)

    def put(self, key: str, grid_thw: torch.Tensor, features: VisionFeatures) -> CachedPicture:
        """Keep freshly computed features (model thread); returns the entry, held or not (too large)."""
        with self._lock:
            held = self._held(key)
            if held is not None:
                return held
            entry = CachedPicture(key, grid_thw, features.embeds.shape[0], features)
            self._insert(self.first_tier, entry)
        return entry

    def on_device(self, entry: CachedPicture) -> VisionFeatures:
        """The entry's features where the model runs (model thread); a host-tier entry is copied back
        and becomes the most recently used of the device tier."""
        if self.first_tier == HOST:
            return entry.features
        with self._lock:
            if entry.tier == DEVICE:
                return entry.features
            promote = entry.tier == HOST
            if promote:
                self._remove(entry)
        features = entry.features.to(self.device)  # a no-op for features already there
        with self._lock:
            entry.features = features
            if promote and self._held(entry.key) is None:
                self._insert(DEVICE, entry)
        return features

    def clear(self) -> None:
        """Drop every entry (entries held by prepared requests stay usable)."""
        with self._lock:
            for entries in self._tiers.values():
                for entry in entries.values():
                    entry.tier = None
                entries.clear()
            self._bytes = dict.fromkeys(self.capacity, 0)

    def stats(self) -> FeatureCacheStats:
        with self._lock:
            return FeatureCacheStats(
                hits=dict(self._hits),
                misses=self._misses,
                bytes=dict(self._bytes),
                entries={tier: len(entries) for tier, entries in self._tiers.items()},
                capacity=dict(self.capacity),
            )

    # ---- internals (the lock held) ---------------------------------------------------------------

    def _held(self, key: str) -> CachedPicture | None:
        return next((entries[key] for entries in self._tiers.values() if key in entries), None)

    def _insert(self, tier: str, entry: CachedPicture) -> None:
        """Make `entry` the most recent of `tier`, evicting the least recent ones down the tiers."""
        size = entry.nbytes
        if size > self.capacity[tier]:
            self._demote(tier, entry)
            return
        entries = self._tiers[tier]
        while self._bytes[tier] + size > self.capacity[tier]:
            _, oldest = entries.popitem(last=False)
            self._bytes[tier] -= oldest.nbytes
            oldest.tier = None
            self._demote(tier, oldest)
        entries[entry.key] = entry
        self._bytes[tier] += size
        entry.tier = tier

    def _demote(self, tier: str, entry: CachedPicture) -> None:
        """An entry leaving `tier`: to the host tier if `tier` is the device's, else dropped."""
        if tier == DEVICE and self.capacity[HOST] > 0:
            entry.features = entry.features.to("cpu")
            self._insert(HOST, entry)

    def _remove(self, entry: CachedPicture) -> None:
        entries = self._tiers[entry.tier]
        del entries[entry.key]
        self._bytes[entry.tier] -= entry.nbytes
        entry.tier = None

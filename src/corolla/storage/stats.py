"""Storage metrics: listings, downloads and the cache, rendered at scrape time.

One :class:`StorageStats` per server (built by the server, passed to every remote source); its
``collect`` is a metrics source (``Metrics.add_source``). Counters only grow; they are updated
from worker threads under a lock.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import Metric

from corolla.errors import CorollaError

if TYPE_CHECKING:
    from corolla.storage.cache import ModelCache


class StorageStats:
    def __init__(self, cache: ModelCache | None = None) -> None:
        self.cache = cache
        self._lock = threading.Lock()
        self.listings: Counter[tuple[str, str]] = Counter()
        self.downloads: Counter[tuple[str, str]] = Counter()
        self.download_bytes: Counter[str] = Counter()

    def listing(self, model: str, *, ok: bool) -> None:
        with self._lock:
            self.listings[(model, "ok" if ok else "error")] += 1

    def download(self, model: str, *, ok: bool, nbytes: int,
                 error: BaseException | None = None) -> None:
        if ok:
            result = "ok"
        elif isinstance(error, CorollaError):
            result = error.code.name.lower()  # data_loss, unavailable, resource_exhausted...
        else:
            result = "error"
        with self._lock:
            self.downloads[(model, result)] += 1
            self.download_bytes[model] += nbytes

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            listings, downloads = dict(self.listings), dict(self.downloads)
            nbytes = dict(self.download_bytes)
        m_list = Metric("corolla_storage_listings", "Listings of remote model stores, by "
                        "result (error: unreachable, throttled, refused credentials...).",
                        "counter")
        for (model, result), n in sorted(listings.items()):
            m_list.add_sample("corolla_storage_listings_total",
                              {"model_name": model, "result": result}, n)
        m_dl = Metric("corolla_storage_downloads", "Version downloads from remote stores, by "
                      "result (ok, data_loss: failed verification, unavailable, "
                      "resource_exhausted: does not fit the cache...).", "counter")
        for (model, result), n in sorted(downloads.items()):
            m_dl.add_sample("corolla_storage_downloads_total",
                            {"model_name": model, "result": result}, n)
        m_bytes = Metric("corolla_storage_download_bytes", "Bytes downloaded from remote "
                         "stores.", "counter")
        for model, n in sorted(nbytes.items()):
            m_bytes.add_sample("corolla_storage_download_bytes_total", {"model_name": model}, n)
        out = [m_list, m_dl, m_bytes]
        if self.cache is not None:
            used, entries = self.cache.usage()
            g = Metric("corolla_model_cache_bytes", "Bytes of verified versions in the model "
                       "cache.", "gauge")
            g.add_sample("corolla_model_cache_bytes", {}, used)
            e = Metric("corolla_model_cache_versions", "Verified versions in the model cache.",
                       "gauge")
            e.add_sample("corolla_model_cache_versions", {}, entries)
            out += [g, e]
        return out

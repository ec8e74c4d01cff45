"""Where versions live besides the local disk: S3, GCS, HTTP archives and Redis.

- :mod:`.base` the store interface and its errors; :mod:`.uri` picks a store for a URI.
- :mod:`.objects` what S3 and GCS share (versions as key prefixes); :mod:`.s3`, :mod:`.gcs`,
  :mod:`.http_archive`, :mod:`.redis_store`, :mod:`.local` the stores.
- :mod:`.cache` the local download cache; :mod:`.source` the remote source that lists,
  downloads, verifies and only then offers a version with its local path.
- :mod:`.transfer` downloads and publications shared by the server and the commands
  (:mod:`.cli`: ``corolla push``, ``fetch-model``, ``versions``).

Client libraries are optional extras (``corolla[s3]``, ``[gcs]``, ``[redis]``, ``[storage]``)
imported only by the store that needs them. The policy, the manager and the runtimes never
import this package.
"""

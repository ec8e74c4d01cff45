"""Protocol buffers: TensorFlow Serving's and KServe V2's wire formats.

The ``.proto`` files under this package are Corolla's own copies of the upstream definitions (same
packages, message names and field numbers, so the bytes on the wire are the same; unused fields
are omitted, never renumbered). ``gen/`` holds the generated Python (``scripts/gen_protos.sh``);
its messages live in :data:`corolla.protos.pool.POOL`, not protobuf's default pool.
"""

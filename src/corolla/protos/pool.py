"""Corolla's descriptor pool, shared by every generated module in :mod:`corolla.protos.gen`.

Why not protobuf's default pool: TensorFlow (``tensorflow.TensorProto``), tensorflow-serving-api
and tritonclient (``inference.ModelInferRequest``) register the same symbols from files of their
own; two different files defining one symbol in one pool fail at import time. A private pool lets
Corolla's server and client live in a process that also imports any of those.

The pool is process-wide by nature (generated modules register into it on import, once); it holds
only immutable descriptors. Well-known types it depends on are registered here, which makes
``google.protobuf.Any`` and the wrapper types inside Corolla's messages classes of this pool: set
their fields (``spec.version.value = 3``) rather than assigning ``wrappers_pb2`` instances.
"""

from __future__ import annotations

from google.protobuf import any_pb2, descriptor_pool, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()
for _module in (any_pb2, wrappers_pb2):
    POOL.AddSerializedFile(_module.DESCRIPTOR.serialized_pb)
del _module

"""A small synchronous client for a Corolla (or TF Serving / KServe V2) server.

Four protocols, one question: the top-k labels of some images.

- ``rest``: TF Serving REST, ``POST /v1/models/<m>:predict`` with ``{"b64": ...}`` instances and
  Corolla's ``top_k`` (labels come back with scores).
- ``grpc``: TF Serving gRPC ``Classify`` with one ``tf.Example`` per image (feature ``image``).
- ``v2``: KServe V2 REST with the binary tensor data extension and Triton's classification
  extension (``classification: k`` on the scores output).
- ``v2-grpc``: the same over KServe V2 gRPC.

REST uses the standard library (urllib); gRPC uses Corolla's generated stubs. Lower-level calls
(:meth:`Client.grpc_predict`, :meth:`Client.v2_infer`, :meth:`Client.v2_grpc_infer`) return raw
output tensors.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from corolla.errors import Code, CorollaError, InvalidArgument
from corolla.protocols import kserve_v2, kserve_v2_grpc, tensor_proto
from corolla.protocols import kserve_v2_tensors as v2t

PROTOCOLS = ("rest", "grpc", "v2", "v2-grpc")
TopK = list[tuple[str, float]]


class ClientError(CorollaError):
    """A failed call; ``code`` is the server's status (HTTP statuses map to the closest)."""


_HTTP_CODES = {400: Code.INVALID_ARGUMENT, 401: Code.UNAUTHENTICATED, 403: Code.PERMISSION_DENIED,
               404: Code.NOT_FOUND, 429: Code.RESOURCE_EXHAUSTED, 501: Code.UNIMPLEMENTED,
               503: Code.UNAVAILABLE, 504: Code.DEADLINE_EXCEEDED}


class Client:
    def __init__(self, host: str = "localhost", *, rest_port: int = 8501, grpc_port: int = 8500,
                 timeout: float = 30.0, max_message_bytes: int = 64 << 20) -> None:
        self.host, self.rest_port, self.grpc_port = host, rest_port, grpc_port
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._channel: Any = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    # ---- transport ---------------------------------------------------------------------

    def _http(self, method: str, path: str, body: bytes | None = None,
              headers: Mapping[str, str] | None = None) -> tuple[bytes, Mapping[str, str]]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        req = urllib.request.Request(f"http://{host}:{self.rest_port}{path}", data=body,
                                     method=method, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.read(), resp.headers
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = str(json.loads(raw)["error"])
            except (ValueError, KeyError, TypeError):
                message = raw.decode("utf-8", "replace") or str(exc)
            raise ClientError(message, _HTTP_CODES.get(exc.code, Code.UNKNOWN)) from exc
        except OSError as exc:
            raise ClientError(f"cannot reach {host}:{self.rest_port}: {exc}",
                              Code.UNAVAILABLE) from exc

    def _json(self, method: str, path: str, doc: Any = None) -> Any:
        body = None if doc is None else json.dumps(doc).encode()
        raw, _ = self._http(method, path, body, {"Content-Type": "application/json"})
        return json.loads(raw)

    def _grpc(self, stub_class: Any, method: str, request: Any) -> Any:
        import grpc

        if self._channel is None:
            opts = [("grpc.max_receive_message_length", self.max_message_bytes),
                    ("grpc.max_send_message_length", self.max_message_bytes)]
            host = f"[{self.host}]" if ":" in self.host else self.host
            self._channel = grpc.insecure_channel(f"{host}:{self.grpc_port}", options=opts)
        try:
            return getattr(stub_class(self._channel), method)(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            code = Code[exc.code().name] if exc.code().name in Code.__members__ else Code.UNKNOWN
            raise ClientError(exc.details() or str(exc.code()), code) from exc

    # ---- TF Serving --------------------------------------------------------------------

    @staticmethod
    def _v1_path(model: str, version: int | None) -> str:
        return f"/v1/models/{model}" + (f"/versions/{version}" if version is not None else "")

    def rest_top_k(self, model: str, images: Sequence[bytes], *, k: int = 5,
                   version: int | None = None) -> list[TopK]:
        doc = {"instances": [{"b64": base64.b64encode(img).decode()} for img in images],
               "top_k": k}
        out = self._json("POST", self._v1_path(model, version) + ":predict", doc)
        return [[(t["label"], float(t["score"])) for t in p["top_k"]] for p in out["predictions"]]

    def grpc_predict(self, model: str, inputs: Mapping[str, np.ndarray], *,
                     version: int | None = None, signature: str = "",
                     output_filter: Sequence[str] = ()) -> dict[str, np.ndarray]:
        from corolla.protos.gen.tensorflow_serving.apis import predict_pb2
        from corolla.protos.gen.tensorflow_serving.apis import prediction_service_pb2_grpc as ps

        req = predict_pb2.PredictRequest(output_filter=list(output_filter))
        req.model_spec.name, req.model_spec.signature_name = model, signature
        if version is not None:
            req.model_spec.version.value = version
        for alias, arr in inputs.items():
            tensor_proto.from_numpy(arr, content=arr.dtype != object, out=req.inputs[alias])
        resp = self._grpc(ps.PredictionServiceStub, "Predict", req)
        return {alias: tensor_proto.to_numpy(tp) for alias, tp in resp.outputs.items()}

    def grpc_top_k(self, model: str, images: Sequence[bytes], *, k: int = 5,
                   version: int | None = None, feature: str = "image") -> list[TopK]:
        from corolla.protos.gen.tensorflow_serving.apis import classification_pb2
        from corolla.protos.gen.tensorflow_serving.apis import prediction_service_pb2_grpc as ps

        req = classification_pb2.ClassificationRequest()
        req.model_spec.name = model
        if version is not None:
            req.model_spec.version.value = version
        for img in images:
            ex = req.input.example_list.examples.add()
            ex.features.feature[feature].bytes_list.value.append(img)
        resp = self._grpc(ps.PredictionServiceStub, "Classify", req)
        return [[(c.label, c.score) for c in row.classes][:k]
                for row in resp.result.classifications]

    # ---- KServe V2 ---------------------------------------------------------------------

    @staticmethod
    def _v2_path(model: str, version: int | None) -> str:
        return f"/v2/models/{model}" + (f"/versions/{version}" if version is not None else "")

    def v2_metadata(self, model: str, version: int | None = None, *, grpc: bool = False
                    ) -> dict[str, Any]:
        if not grpc:
            return dict(self._json("GET", self._v2_path(model, version)))
        from corolla.protos.gen import grpc_predict_v2_pb2 as pb
        from corolla.protos.gen import grpc_predict_v2_pb2_grpc as pb_grpc

        req = pb.ModelMetadataRequest(name=model, version="" if version is None else str(version))
        resp = self._grpc(pb_grpc.GRPCInferenceServiceStub, "ModelMetadata", req)
        tensors = [[{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                    for t in ts] for ts in (resp.inputs, resp.outputs)]
        return {"name": resp.name, "versions": list(resp.versions), "platform": resp.platform,
                "inputs": tensors[0], "outputs": tensors[1]}

    def v2_infer(self, model: str, inputs: Mapping[str, np.ndarray], *,
                 version: int | None = None, outputs: Mapping[str, Mapping[str, Any]] | None = None
                 ) -> dict[str, np.ndarray]:
        """V2 REST with every tensor in binary; ``outputs``: name -> extra parameters."""
        items, blobs = [], []
        for name, arr in inputs.items():
            raw = v2t.to_raw(arr)
            items.append({"name": name, "datatype": v2t.datatype_of(arr),
                          "shape": list(arr.shape), "parameters": {"binary_data_size": len(raw)}})
            blobs.append(raw)
        doc: dict[str, Any] = {"inputs": items, "parameters": {"binary_data_output": True}}
        if outputs:
            doc["outputs"] = [{"name": n, "parameters": {"binary_data": True, **p}}
                              for n, p in outputs.items()]
        header = json.dumps(doc).encode()
        body, headers = self._http("POST", self._v2_path(model, version) + "/infer",
                                   b"".join([header, *blobs]),
                                   {"Content-Type": "application/octet-stream",
                                    kserve_v2.HEADER_LENGTH: str(len(header))})
        length = int(headers.get(kserve_v2.HEADER_LENGTH) or len(body))
        meta, offset, out = json.loads(body[:length]), length, {}
        for o in meta["outputs"]:
            shape = tuple(o["shape"])
            if "data" in o:
                data = o["data"]
                if o["datatype"] == "BYTES":
                    data = [x.encode() for x in data]
                    out[o["name"]] = np.array(data, dtype=object).reshape(shape)
                else:
                    dtype = v2t.numpy_of(o["datatype"])
                    out[o["name"]] = np.array(data, dtype=dtype).reshape(shape)
                continue
            size = int(o["parameters"]["binary_data_size"])
            out[o["name"]] = v2t.from_raw(o["name"], o["datatype"], shape,
                                                body[offset:offset + size])
            offset += size
        return out

    def v2_grpc_infer(self, model: str, inputs: Mapping[str, np.ndarray], *,
                      version: int | None = None,
                      outputs: Mapping[str, Mapping[str, Any]] | None = None
                      ) -> dict[str, np.ndarray]:
        from corolla.protos.gen import grpc_predict_v2_pb2_grpc as pb_grpc

        req = kserve_v2_grpc.encode_request(
            inputs, model_name=model, model_version="" if version is None else str(version))
        for name, params in (outputs or {}).items():
            o = req.outputs.add(name=name)
            for key, value in params.items():
                kserve_v2_grpc.set_parameter(o.parameters[key], value)
        resp = self._grpc(pb_grpc.GRPCInferenceServiceStub, "ModelInfer", req)
        return kserve_v2_grpc.decode_response(resp)

    def v2_top_k(self, model: str, images: Sequence[bytes], *, k: int = 5,
                 version: int | None = None, grpc: bool = False, output: str | None = None
                 ) -> list[TopK]:
        md = self.v2_metadata(model, version, grpc=grpc)
        if len(md["inputs"]) != 1:
            raise InvalidArgument(f"model {model} has {len(md['inputs'])} inputs; need one image")
        if output is None:
            scores = [o for o in md["outputs"] if o["datatype"].startswith("FP")]
            if not scores:
                raise InvalidArgument(f"model {model} has no score output")
            output = scores[0]["name"]
        arr = np.empty(len(images), dtype=object)
        arr[:] = list(images)
        infer = self.v2_grpc_infer if grpc else self.v2_infer
        out = infer(model, {md["inputs"][0]["name"]: arr}, version=version,
                    outputs={output: {"classification": k}})
        return [[(label or str(index), score)
                 for label, index, score in map(v2t.parse_classification, row)]
                for row in out[output].reshape(len(images), -1)]

    # ---- one question, any protocol ------------------------------------------------------

    def top_k(self, model: str, images: Sequence[bytes], *, protocol: str = "rest", k: int = 5,
              version: int | None = None) -> list[TopK]:
        """The top-k (label, score) of each image, best first."""
        if protocol == "rest":
            return self.rest_top_k(model, images, k=k, version=version)
        if protocol == "grpc":
            return self.grpc_top_k(model, images, k=k, version=version)
        if protocol in ("v2", "v2-grpc"):
            return self.v2_top_k(model, images, k=k, version=version,
                                 grpc=protocol == "v2-grpc")
        raise InvalidArgument(f"unknown protocol {protocol!r} (one of {', '.join(PROTOCOLS)})")

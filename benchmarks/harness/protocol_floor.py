"""Protocol floors for benchmarks/grpc_vs_rest.py: a bare grpc.aio server and a bare uvicorn
ASGI app that answer canned bytes to any request (no model, no decoding, nothing of Corolla's):
what each protocol stack costs per request on its own.

    python harness/protocol_floor.py grpc|rest PORT
"""

from __future__ import annotations

import sys

# About the size of a TF Serving PredictResponse with five probabilities.
RESP = b"\x0a\x10\x0a\x05micro\x12\x02\x08\x01\x1a\x0fserving_default" + b"x" * 60


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "grpc":
        import grpc
        import uvloop

        async def predict(request: bytes, context: object) -> bytes:
            return RESP

        async def serve() -> None:
            server = grpc.aio.server()
            handler = grpc.method_handlers_generic_handler(
                "tensorflow.serving.PredictionService",
                {"Predict": grpc.unary_unary_rpc_method_handler(predict)})
            server.add_generic_rpc_handlers((handler,))
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
            await server.wait_for_termination()

        uvloop.run(serve())
        return
    import uvicorn

    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        if scope["type"] != "http":
            return
        while True:
            message = await receive()  # type: ignore[operator]
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": RESP})  # type: ignore[operator]

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", loop="uvloop",
                http="httptools", access_log=False)


if __name__ == "__main__":
    main()

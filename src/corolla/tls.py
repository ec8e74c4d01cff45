"""TLS and mutual TLS for the REST and gRPC listeners, from PEM files.

:class:`TlsFiles` holds PEM bytes (read once at start, so a bad file fails the start with a clear
message). REST gets an :class:`ssl.SSLContext` (TLS 1.2 or newer, ALPN http/1.1); gRPC gets
``grpc.ssl_server_credentials``. With a CA and ``client_verify`` the server demands a client
certificate signed by that CA (mutual TLS); with a CA alone, it asks for one and verifies it when
sent (REST: CERT_OPTIONAL; gRPC: require_client_auth=False).

TensorFlow Serving's ``--ssl_config_file`` (an SSLConfig message in text format, with the PEM
contents inline: server_key, server_cert, custom_ca, client_verify) is accepted for gRPC.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corolla.errors import InvalidArgument


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes | None = None
    client_verify: bool = False

    @property
    def mutual(self) -> bool:
        return self.ca_pem is not None and self.client_verify


def _read(path: str, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the {what} {path}: {exc}") from exc
    if b"-----BEGIN" not in data:
        raise InvalidArgument(f"the {what} {path} is not PEM")
    return data


def load_tls_files(
    certfile: str, keyfile: str, ca_file: str | None = None, client_verify: bool = False
) -> TlsFiles:
    tls = TlsFiles(
        cert_pem=_read(certfile, "certificate"),
        key_pem=_read(keyfile, "key"),
        ca_pem=_read(ca_file, "CA bundle") if ca_file else None,
        client_verify=client_verify,
    )
    rest_ssl_context(tls)  # validate now: a mismatched key or a bad CA fails the start
    return tls


def parse_ssl_config(text: str, source: str = "ssl config") -> TlsFiles:
    """TF Serving's SSLConfig text format."""
    from google.protobuf import text_format

    from corolla.protos.gen.tensorflow_serving.config import ssl_config_pb2

    msg = ssl_config_pb2.SSLConfig()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise InvalidArgument(f"{source}: {exc}") from exc
    if not msg.server_key or not msg.server_cert:
        raise InvalidArgument(f"{source}: server_key and server_cert are required")
    tls = TlsFiles(
        cert_pem=msg.server_cert.encode(),
        key_pem=msg.server_key.encode(),
        ca_pem=msg.custom_ca.encode() if msg.custom_ca else None,
        client_verify=bool(msg.client_verify),
    )
    if tls.client_verify and tls.ca_pem is None:
        raise InvalidArgument(f"{source}: client_verify needs custom_ca")
    rest_ssl_context(tls)
    return tls


def load_ssl_config_file(path: str) -> TlsFiles:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidArgument(f"cannot read --ssl_config_file {path}: {exc}") from exc
    return parse_ssl_config(text, path)


def rest_ssl_context(tls: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain takes only files: write the PEMs to a private temporary directory.
    with tempfile.TemporaryDirectory(prefix="corolla-tls-") as d:
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        for path, data in ((cert, tls.cert_pem), (key, tls.key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        try:
            ctx.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise InvalidArgument(f"TLS: the certificate and key do not load: {exc}") from exc
    if tls.ca_pem is not None:
        try:
            ctx.load_verify_locations(cadata=tls.ca_pem.decode("ascii"))
        except (ssl.SSLError, ValueError) as exc:
            raise InvalidArgument(f"TLS: the CA bundle does not load: {exc}") from exc
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.client_verify else ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def grpc_server_credentials(tls: TlsFiles) -> Any:
    import grpc

    return grpc.ssl_server_credentials(
        [(tls.key_pem, tls.cert_pem)], root_certificates=tls.ca_pem, require_client_auth=tls.mutual
    )

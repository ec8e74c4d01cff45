"""TLS and mutual TLS on REST and gRPC with certificates made by the test (openssl CLI).

REST: --ssl_certfile/--ssl_keyfile (+ --ssl_ca_certs --ssl_client_verify for mTLS). gRPC: the
same files, or TF Serving's --ssl_config_file (PEM contents inline)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2
from ops_process import fake_model, grpc_predict_request, health_status, prediction_stub, serve

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl"),
]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=corolla test CA",
        cwd=d,
    )
    (d / "san.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    )
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, ext in (("server", "san.ext"), ("client", "client.ext")):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=d,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            ext,
            cwd=d,
        )
    # A second CA, whose client certificate the server must refuse.
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "rogue.key",
        "-out",
        "rogue.pem",
        "-days",
        "2",
        "-subj",
        "/CN=rogue",
        cwd=d,
    )
    return d


def _model(work: Path) -> list[str]:
    fake_model(work / "m", 1)
    return ["--model_name=m", f"--model_base_path={work / 'm'}"]


def test_rest_and_grpc_tls(tmp_path: Path, pki: Path) -> None:
    args = [
        *_model(tmp_path),
        f"--ssl_certfile={pki / 'server.pem'}",
        f"--ssl_keyfile={pki / 'server.key'}",
    ]
    with serve(
        args,
        tmp_path,
        scheme="https",
        client_kw={"verify": ssl.create_default_context(cafile=pki / "ca.pem")},
        wait="/readyz",
    ) as s:
        with s.client() as c:
            r = c.post("/v1/models/m:predict", json={"instances": [[1, 2, 3, 4]]})
            assert r.status_code == 200
        # Plain HTTP on the TLS port gets no answer; a client that does not trust the CA fails.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{s.rest_port}/healthz", timeout=5)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{s.url}/healthz", timeout=5)
        creds = grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes())
        with grpc.secure_channel(f"localhost:{s.grpc_port}", creds) as ch:
            prediction_stub(ch).Predict(grpc_predict_request("m"), timeout=10)
        with grpc.insecure_channel(s.grpc_target) as ch, pytest.raises(grpc.RpcError):
            health_status(ch)


def test_rest_mutual_tls(tmp_path: Path, pki: Path) -> None:
    args = [
        *_model(tmp_path),
        f"--ssl_certfile={pki / 'server.pem'}",
        f"--ssl_keyfile={pki / 'server.key'}",
        f"--ssl_ca_certs={pki / 'ca.pem'}",
        "--ssl_client_verify",
    ]

    def ctx(cert: str | None, key: str | None = None) -> ssl.SSLContext:
        c = ssl.create_default_context(cafile=pki / "ca.pem")
        if cert:
            c.load_cert_chain(pki / cert, pki / (key or cert.replace(".pem", ".key")))
        return c

    with serve(
        args, tmp_path, scheme="https", client_kw={"verify": ctx("client.pem")}, wait="/readyz"
    ) as s:
        with s.client() as c:
            assert c.get("/v1/models/m").status_code == 200
        for refused in (ctx(None), ctx("rogue.pem")):  # no client certificate / wrong CA
            with pytest.raises(httpx.HTTPError), httpx.Client(verify=refused) as c:
                c.get(f"{s.url}/healthz", timeout=5)


def test_grpc_mutual_tls_from_tf_serving_ssl_config(tmp_path: Path, pki: Path) -> None:
    def q(p: str) -> str:
        return (pki / p).read_text().replace("\n", "\\n")

    (tmp_path / "ssl.config").write_text(
        f'server_key: "{q("server.key")}"\nserver_cert: "{q("server.pem")}"\n'
        f'custom_ca: "{q("ca.pem")}"\nclient_verify: true\n'
    )
    with serve([*_model(tmp_path), "--ssl_config_file=ssl.config"], tmp_path, wait="/readyz") as s:
        ca = (pki / "ca.pem").read_bytes()
        good = grpc.ssl_channel_credentials(
            ca, (pki / "client.key").read_bytes(), (pki / "client.pem").read_bytes()
        )
        with grpc.secure_channel(f"localhost:{s.grpc_port}", good) as ch:
            assert health_status(ch) == health_pb2.HealthCheckResponse.SERVING
            prediction_stub(ch).Predict(grpc_predict_request("m"), timeout=10)
        for creds in (
            grpc.ssl_channel_credentials(ca),
            grpc.ssl_channel_credentials(
                ca, (pki / "rogue.key").read_bytes(), (pki / "rogue.pem").read_bytes()
            ),
        ):
            with grpc.secure_channel(f"localhost:{s.grpc_port}", creds) as ch:
                with pytest.raises(grpc.RpcError) as e:
                    health_status(ch)
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        # REST stays plain HTTP: TF Serving's SSL config is for gRPC only.
        with s.client() as c:
            assert c.get("/readyz").status_code == 200


def test_bad_tls_files_fail_the_start(tmp_path: Path, pki: Path) -> None:
    def start(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "corolla",
                "serve",
                *_model(tmp_path),
                "--port=0",
                "--rest_api_port=0",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    r = start(f"--ssl_certfile={pki / 'server.pem'}", f"--ssl_keyfile={pki / 'client.key'}")
    assert r.returncode == 2 and "do not load" in r.stderr  # the key of another certificate
    r = start("--ssl_certfile=/nonexistent.pem")
    assert r.returncode == 2 and "cannot read the certificate" in r.stderr
    r = start("--ssl_client_verify", f"--ssl_certfile={pki / 'server.pem'}")
    assert r.returncode == 2 and "--ssl_client_verify needs --ssl_ca_certs" in r.stderr

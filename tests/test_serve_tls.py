"""HTTPS: the service serves TLS with uvicorn's options, on loopback, with a certificate made here."""

import shutil
import ssl
import subprocess

import httpx
import pytest

import musicgen_edu as mg
from musicgen_edu.errors import ConfigError

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="needs the openssl command to make a test certificate")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (and localhost), valid one day: (cert, key)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_the_service_answers_over_https_and_only_there(certificate, tmp_path):
    cert, key = certificate
    with mg.start_server(port=0, storage_dir=tmp_path / "store", tls_certfile=cert,
                         tls_keyfile=key) as server:
        assert server.url.startswith("https://127.0.0.1:")
        verified = httpx.get(f"{server.url}/healthz", verify=ssl.create_default_context(
            cafile=str(cert)), timeout=30)
        assert verified.status_code == 200
        with pytest.raises(httpx.ConnectError):   # an unknown issuer is refused by a client
            httpx.get(f"{server.url}/healthz", timeout=30)
        plain = server.url.replace("https://", "http://")
        with pytest.raises(httpx.HTTPError):      # no plain HTTP on the TLS port
            httpx.get(f"{plain}/healthz", timeout=30)
        job = httpx.post(f"{server.url}/v1/generate", json={"prompts": ["x"], "duration": 0.2},
                         verify=ssl.create_default_context(cafile=str(cert)), timeout=30)
        assert job.status_code == 202


def test_a_certificate_needs_its_key_and_both_must_exist(certificate, tmp_path):
    cert, key = certificate
    with pytest.raises(ConfigError, match="tls_certfile is set but not its pair"):
        mg.load_settings(tls_certfile=cert)
    with pytest.raises(ConfigError, match="tls_keyfile is set but not its pair"):
        mg.load_settings(tls_keyfile=key)
    with pytest.raises(ConfigError, match="tls_keyfile='.*missing.pem' is not a file"):
        mg.load_settings(tls_certfile=cert, tls_keyfile=tmp_path / "missing.pem")
    assert mg.load_settings(tls_certfile=cert, tls_keyfile=key).tls_certfile == cert

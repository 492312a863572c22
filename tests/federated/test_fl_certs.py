"""TLS material for `fl serve`/`fl site`: the CA, the server certificate's SANs, key modes, site keys,
and the CLI's refusal to run plain HTTP off loopback."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from trustmesh.cli import app
from trustmesh.errors import ConfigError
from trustmesh.federated._tls import (
    TLSFiles,
    ca_fingerprint,
    check_site_private_key,
    connect_host,
    create_site_key,
    create_tls,
    is_loopback,
    load_site_public_key,
)

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def _sans(path: Path) -> tuple[list[str], list[str]]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ext.get_values_for_type(x509.DNSName), [str(a) for a in ext.get_values_for_type(x509.IPAddress)]


def _handshake(files: TLSFiles, trust: Path, server_hostname: str) -> None:
    """Serve one TLS handshake with ``files`` on loopback and connect to it trusting ``trust``."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.cert, files.key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def _serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass  # the client refused us: that is what the failing case checks

        thread = threading.Thread(target=_serve)
        thread.start()
        try:
            client_ctx = ssl.create_default_context(cafile=str(trust))
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with client_ctx.wrap_socket(raw, server_hostname=server_hostname):
                    pass
        finally:
            thread.join(timeout=10)


def test_create_tls_writes_ca_and_server_cert_with_sans_and_private_modes(tmp_path: Path) -> None:
    files = create_tls(tmp_path / "tls", ["coord.example.org", "10.0.0.5"])

    dns, ips = _sans(files.cert)
    assert dns == ["coord.example.org", "localhost"]
    assert ips == ["10.0.0.5", "127.0.0.1", "::1"]
    assert files.key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tls" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(days=365)


@pytest.mark.parametrize("bad", ["0.0.0.0", "::", "*.example.org", ""])
def test_create_tls_refuses_wildcards_and_empty_hosts(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="--host"):
        create_tls(tmp_path / "tls", [bad])
    assert not (tmp_path / "tls" / "server.pem").exists()


def test_server_cert_validates_for_its_names_only(tmp_path: Path) -> None:
    files = create_tls(tmp_path / "tls", ["coord.example.org", "10.0.0.5"])

    for host in ("coord.example.org", "10.0.0.5", "127.0.0.1", "0.0.0.0", "localhost"):
        files.check_host(host)
    with pytest.raises(ConfigError, match="does not validate for '10.0.0.6'"):
        files.check_host("10.0.0.6")
    with pytest.raises(ConfigError, match="does not validate"):
        files.check_host("coord.example.org", now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=400))


def test_real_tls_handshake_accepts_right_ca_and_refuses_a_foreign_one(tmp_path: Path) -> None:
    files = create_tls(tmp_path / "tls", ["127.0.0.1"])
    foreign = create_tls(tmp_path / "other", ["127.0.0.1"])

    _handshake(files, files.ca, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(files, foreign.ca, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(files, files.ca, "coord.example.org")  # not in the SANs


def test_renew_keeps_the_ca_and_replaces_the_server_key(tmp_path: Path) -> None:
    first = create_tls(tmp_path / "tls", ["127.0.0.1"])
    ca_before, key_before = first.ca.read_bytes(), first.key.read_bytes()

    with pytest.raises(ConfigError, match="--renew"):
        create_tls(tmp_path / "tls", ["127.0.0.1"])
    renewed = create_tls(tmp_path / "tls", ["127.0.0.1", "coord.example.org"], renew=True)

    assert renewed.ca.read_bytes() == ca_before
    assert renewed.key.read_bytes() != key_before
    assert "coord.example.org" in _sans(renewed.cert)[0]


def test_load_rejects_mismatched_key_foreign_ca_and_loose_mode(tmp_path: Path) -> None:
    a = create_tls(tmp_path / "a", ["127.0.0.1"])
    b = create_tls(tmp_path / "b", ["127.0.0.1"])

    with pytest.raises(ConfigError, match="does not belong"):
        TLSFiles.load(a.ca, a.cert, b.key)
    with pytest.raises(ConfigError, match="not issued by the CA"):
        TLSFiles.load(b.ca, a.cert, a.key)
    a.key.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        TLSFiles.from_dir(tmp_path / "a")
    with pytest.raises(ConfigError, match="not found"):
        TLSFiles.from_dir(tmp_path / "missing")
    with pytest.raises(ConfigError, match="not a CA certificate"):
        ca_fingerprint(b.cert)


def test_site_key_is_openssh_p384_private_0600_and_checks(tmp_path: Path) -> None:
    key = create_site_key(tmp_path / "keys" / "site0")

    priv = serialization.load_ssh_private_key(key.private.read_bytes(), password=None)
    assert isinstance(priv, ec.EllipticCurvePrivateKey) and priv.curve.name == "secp384r1"
    assert key.private.stat().st_mode & 0o777 == 0o600
    assert key.public.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert load_site_public_key(key.public) == key.fingerprint
    check_site_private_key(key.private)
    with pytest.raises(ConfigError, match="exists already"):
        create_site_key(tmp_path / "keys" / "site0")
    with pytest.raises(ConfigError, match="not an OpenSSH public key"):
        load_site_public_key(key.private)
    key.private.chmod(0o640)
    with pytest.raises(ConfigError, match="readable by others"):
        check_site_private_key(key.private)


@pytest.mark.parametrize(("host", "loop"), [("127.0.0.1", True), ("::1", True), ("[::1]", True),
                                            ("localhost", True), ("127.8.9.1", True), ("0.0.0.0", False),
                                            ("::", False), ("10.0.0.5", False), ("coord.example.org", False)])
def test_is_loopback(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


def test_connect_host_maps_bind_all_to_loopback() -> None:
    assert connect_host("0.0.0.0") == "127.0.0.1"
    assert connect_host("::") == "::1"
    assert connect_host("10.0.0.5") == "10.0.0.5"


def test_certs_and_site_key_commands_print_no_key_material(tmp_path: Path) -> None:
    code, out = _run("fl", "certs", str(tmp_path / "tls"), "--host", "coord.example.org", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert "coord.example.org" in doc["hosts"] and "127.0.0.1" in doc["hosts"]
    assert doc["give_to_sites"].endswith("ca.pem")
    code, out2 = _run("fl", "site-key", str(tmp_path / "site0"), "--json")
    assert code == 0, out2
    for secret in (tmp_path / "tls" / "server.key", tmp_path / "tls" / "ca.key", tmp_path / "site0"):
        body = "".join(secret.read_text().splitlines()[1:-1])
        assert body[:40] not in out + out2
    assert "PRIVATE" not in out + out2


def test_serve_refuses_plain_http_off_loopback_and_requires_tls_by_default(tmp_path: Path) -> None:
    code, out = _run("fl", "serve", "--host", "0.0.0.0", "--insecure", "--work-dir", str(tmp_path / "w"))
    assert code == 2 and "refusing plain HTTP on non-loopback" in out
    code, out = _run("fl", "serve", "--work-dir", str(tmp_path / "w"))
    assert code == 2 and "needs TLS" in out
    create_tls(tmp_path / "tls", ["127.0.0.1"])
    code, out = _run("fl", "serve", "--host", "10.0.0.5", "--tls-dir", str(tmp_path / "tls"))
    assert code == 2 and "does not validate for '10.0.0.5'" in out
    code, out = _run("fl", "serve", "--host", "0.0.0.0", "--tls-dir", str(tmp_path / "tls"))
    assert code == 2 and "--enroll" in out
    code, out = _run("fl", "serve", "--insecure", "--enroll", str(tmp_path / "nope.pub"))
    assert code == 2 and "nope.pub" in out
    assert not (tmp_path / "w").exists()  # nothing started, nothing written


def test_site_refuses_plain_http_off_loopback_and_requires_a_root_cert(tmp_path: Path) -> None:
    code, out = _run("fl", "site", "--partition-id", "0", "--superlink", "10.0.0.5:9092", "--insecure")
    assert code == 2 and "refusing plain HTTP to non-loopback" in out
    code, out = _run("fl", "site", "--partition-id", "0", "--superlink", "10.0.0.5:9092")
    assert code == 2 and "--root-cert" in out
    files = create_tls(tmp_path / "tls", ["127.0.0.1"])
    code, out = _run("fl", "site", "--partition-id", "0", "--root-cert", str(files.cert))
    assert code == 2 and "not a CA certificate" in out
    code, out = _run("fl", "site", "--partition-id", "0", "--superlink", "nohostport", "--insecure")
    assert code == 2 and "HOST:PORT" in out


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"root_cert": Path("ca.pem"), "insecure": True}, "--insecure excludes --root-cert"),
    ({}, "needs --root-cert"),
    ({"insecure": True, "auth_key": Path("site.key")}, "--auth-key needs TLS"),
])
def test_site_transport_refuses_settings_that_would_leak_updates(kwargs: dict[str, Any], message: str) -> None:
    from trustmesh.federated._tls import check_site_transport

    with pytest.raises(ConfigError, match=message):
        check_site_transport("127.0.0.1:9092", "127.0.0.1", **kwargs)

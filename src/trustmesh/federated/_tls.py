"""TLS material and site enrolment keys for a Flower deployment across machines.

``create_tls`` makes a private CA and a server certificate for the SuperLink (RFC 5280 profile:
SubjectAltNames for every name and address the sites dial, ``serverAuth`` only, ECDSA P-256), and
``create_site_key`` makes the P-384 key pair a SuperNode signs its Fleet API calls with; Flower's
SuperLink admits only sites whose public key was registered (``--enable-supernode-auth``).
Private keys are written 0600 via a temporary file and ``os.replace`` and never logged.
This module only needs pyca/cryptography, so the CLI can check certificates before it starts Flower.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustmesh.errors import ConfigError

__all__ = [
    "LOOPBACK_NAMES",
    "SiteKey",
    "TLSFiles",
    "ca_fingerprint",
    "check_site_private_key",
    "check_site_transport",
    "connect_host",
    "create_site_key",
    "create_tls",
    "is_loopback",
    "load_site_public_key",
    "server_tls",
]

_log = logging.getLogger(__name__)

#: Always in the server certificate: ``flwr run`` and the SuperLink's own SuperExec dial loopback.
LOOPBACK_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")

CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY = "ca.pem", "ca.key", "server.pem", "server.key"


def is_loopback(host: str) -> bool:
    """Return True when ``host`` (a name or an IPv4/IPv6 address, brackets allowed) is loopback only."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def connect_host(bind_host: str) -> str:
    """Return the address a local client dials for a server bound to ``bind_host`` (any -> loopback)."""
    h = bind_host.strip().strip("[]")
    if h in ("0.0.0.0", ""):
        return "127.0.0.1"
    if h == "::":
        return "::1"
    return h


def _san(host: str) -> x509.GeneralName:
    h = host.strip().strip("[]")
    if not h:
        raise ConfigError("--host: empty host name")
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        ip = None
    if (ip is not None and ip.is_unspecified) or "*" in h or "/" in h or " " in h:
        raise ConfigError(f"--host {host!r}: give a name or address the sites dial, not a wildcard")
    return x509.DNSName(h.lower()) if ip is None else x509.IPAddress(ip)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte on (no window where it is wider)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _check_private_mode(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"{path}: private key is readable by others (mode {mode:o}); chmod 600 it")


@dataclass(frozen=True)
class TLSFiles:
    """The three PEM files a SuperLink serves with; ``ca`` is also what every site trusts."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_dir(cls, directory: Path) -> TLSFiles:
        """Load ``ca.pem``, ``server.pem`` and ``server.key`` from a directory made by ``create_tls``."""
        d = Path(directory)
        return cls.load(d / CA_CERT, d / SERVER_CERT, d / SERVER_KEY)

    @classmethod
    def load(cls, ca: Path, cert: Path, key: Path) -> TLSFiles:
        """Check that the files exist, parse, match (key <-> cert), chain to ``ca``, and the key is 0600."""
        for name, p in (("CA certificate", ca), ("server certificate", cert), ("server key", key)):
            if not Path(p).is_file():
                raise ConfigError(f"{p}: {name} not found "
                                  "(create it with `trustmesh fl certs DIR --host NAME`)")
        _check_private_mode(Path(key))
        ca_cert = _load_cert(Path(ca))
        srv_cert = _load_cert(Path(cert))
        try:
            priv = serialization.load_pem_private_key(Path(key).read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{key}: not an unencrypted PEM private key ({type(exc).__name__})") from None
        if _spki(priv.public_key()) != _spki(srv_cert.public_key()):
            raise ConfigError(f"{key}: does not belong to the certificate {cert}")
        try:
            srv_cert.verify_directly_issued_by(ca_cert)  # the signature, not just a matching issuer name
        except (ValueError, TypeError, InvalidSignature):
            raise ConfigError(f"{cert}: not issued by the CA in {ca}") from None
        return cls(Path(ca), Path(cert), Path(key))

    def check_host(self, host: str, *, now: _dt.datetime | None = None) -> None:
        """Raise ConfigError unless the server certificate validates for ``host`` against the CA now.

        Uses pyca/cryptography's RFC 5280 path validation, as a site would, so a certificate without
        the right SubjectAltName (or expired) fails here with a clear message, not deep inside Flower.
        """
        from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

        when = now or _dt.datetime.now(_dt.timezone.utc)
        verifier = PolicyBuilder().store(Store([_load_cert(self.ca)])).time(when) \
            .build_server_verifier(_san(connect_host(host)))  # type: ignore[arg-type]
        try:
            verifier.verify(_load_cert(self.cert), [])
        except VerificationError as exc:
            raise ConfigError(f"{self.cert}: does not validate for {host!r} against {self.ca}: {exc}. "
                              f"Re-issue it with `trustmesh fl certs DIR --host {host} --renew`") from None

    def describe(self) -> dict[str, Any]:
        """Return paths, the CA's SHA-256 fingerprint, the server's SANs and expiry (no key bytes)."""
        cert = _load_cert(self.cert)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = [str(v) for v in sans.get_values_for_type(x509.DNSName)] + \
            [str(v) for v in sans.get_values_for_type(x509.IPAddress)]
        return {"ca": str(self.ca), "cert": str(self.cert), "key": str(self.key),
                "ca_sha256": ca_fingerprint(self.ca), "hosts": hosts,
                "not_after": cert.not_valid_after_utc.isoformat()}


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        raise ConfigError(f"{path}: not a PEM X.509 certificate") from None


def ca_fingerprint(path: Path) -> str:
    """Check ``path`` holds a CA certificate (PEM); return its DER's SHA-256 (hex) for out-of-band checks."""
    cert = _load_cert(Path(path))
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ConfigError(f"{path}: not a CA certificate (give the coordinator's ca.pem, not server.pem)")
    return cert.fingerprint(hashes.SHA256()).hex()


def check_site_private_key(path: Path) -> None:
    """Raise ConfigError unless ``path`` is a 0600 OpenSSH EC private key (what Flower's SuperNode reads)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: site private key not found (create it with `trustmesh fl site-key`)")
    _check_private_mode(p)
    try:
        key = serialization.load_ssh_private_key(p.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(f"{p}: not an unencrypted OpenSSH private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{p}: Flower needs an EC (NIST curve) key, got {type(key).__name__}")


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """RFC 5280 4.2.1.3: a CA signs certificates (and CRLs); an ECDSA TLS server only signs handshakes."""
    return x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trustmesh"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def create_tls(directory: Path, hosts: list[str], *, days: int = 365, ca_days: int = 3650,
               renew: bool = False) -> TLSFiles:
    """Create (or reuse) a private CA in ``directory`` and issue a SuperLink server certificate.

    Parameters
    ----------
    hosts
        Names/addresses the sites dial (the ``--superlink`` they pass); loopback names are always added
        because ``flwr run`` and the SuperLink's own runtime connect over loopback.
    days
        Validity of the server certificate; rotate by running again with ``renew=True`` (the CA, and so
        every site's ``ca.pem``, stays the same).
    renew
        Replace an existing server certificate and key; without it an existing one is an error.
    """
    if days <= 0:
        raise ValueError(f"days must be > 0, got {days}")
    if ca_days < days:
        raise ValueError(f"ca_days must be >= days, got {ca_days} < {days}")
    if not hosts:
        raise ConfigError("--host: give at least one name or address the sites will dial")
    d = Path(directory)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (d / SERVER_CERT).exists() and not renew:
        raise ConfigError(f"{d / SERVER_CERT} exists; pass --renew to issue a new server certificate")
    names: list[str] = []
    for h in [*hosts, *LOOPBACK_NAMES]:
        if h.strip().strip("[]").lower() not in [n.lower() for n in names]:
            names.append(h.strip().strip("[]"))
    sans = [_san(h) for h in names]
    now = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=5)  # tolerate small clock skew

    if (d / CA_CERT).exists() and (d / CA_KEY).exists():
        _check_private_mode(d / CA_KEY)
        ca_cert = _load_cert(d / CA_CERT)
        loaded = serialization.load_pem_private_key((d / CA_KEY).read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{d / CA_KEY}: expected an EC private key")
        ca_key = loaded
        _log.info("reusing the CA in %s", d)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_pub = ca_key.public_key()
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name("trustmesh federated CA")).issuer_name(_name("trustmesh federated CA"))
            .public_key(ca_pub).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + _dt.timedelta(days=ca_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_pub), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(d / CA_KEY, _pkcs8(ca_key))
        _write_public(d / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM))

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0])).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(min(now + _dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(d / SERVER_KEY, _pkcs8(key))
    _write_public(d / SERVER_CERT, cert.public_bytes(serialization.Encoding.PEM))
    files = TLSFiles.from_dir(d)
    files.check_host(names[0])
    return files


@dataclass(frozen=True)
class SiteKey:
    """A site's enrolment key pair: ``private`` stays on the site, ``public`` goes to the coordinator."""

    private: Path
    public: Path
    fingerprint: str  # SHA-256 of the OpenSSH public key line, hex; for comparing out of band


def create_site_key(path: Path, *, overwrite: bool = False) -> SiteKey:
    """Write a P-384 key pair as OpenSSH files: ``path`` (private, 0600) and ``path.pub``.

    Flower 1.41's SuperNode reads the private key with ``--auth-supernode-private-key`` and
    ``flwr supernode register`` takes the public one; both expect OpenSSH encoding of a NIST curve.
    """
    p = Path(path)
    pub = p.with_name(p.name + ".pub")
    if (p.exists() or pub.exists()) and not overwrite:
        raise ConfigError(f"{p}: a site key exists already; pass --force to replace it")
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(p, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                        serialization.NoEncryption()))
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write_public(pub, line + b"\n")
    return SiteKey(p, pub, _fingerprint(line))


def _fingerprint(line: bytes) -> str:
    import hashlib

    return hashlib.sha256(line.strip()).hexdigest()


def load_site_public_key(path: Path) -> str:
    """Check ``path`` holds one OpenSSH NIST-curve EC public key; return its SHA-256 fingerprint."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: site public key not found (create it with `trustmesh fl site-key`)")
    raw = p.read_bytes().strip()
    try:
        key = serialization.load_ssh_public_key(raw)
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{p}: not an OpenSSH public key line of a supported type") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(f"{p}: Flower needs an EC (NIST curve) key, got {type(key).__name__}")
    return _fingerprint(raw)


def server_tls(host: str, *, tls_dir: Path | None = None, ssl_ca: Path | None = None,
               ssl_cert: Path | None = None, ssl_key: Path | None = None, insecure: bool = False) -> TLSFiles | None:
    """Resolve the SuperLink's TLS files (a ``TLSFiles``) or None for an explicit loopback ``--insecure``.

    TLS is the default: without certificates `fl serve` refuses to start, and plain HTTP is allowed
    only on a loopback bind, where nothing off the machine can read updates or submit runs.
    """
    explicit = [p for p in (ssl_ca, ssl_cert, ssl_key) if p is not None]
    if insecure:
        if tls_dir is not None or explicit:
            raise ConfigError("--insecure excludes --tls-dir/--ssl-ca/--ssl-cert/--ssl-key; pick one")
        if not is_loopback(host):
            raise ConfigError(f"refusing plain HTTP on non-loopback --host {host}: every site's model update "
                              "and the SuperLink's run-control API would cross the network unencrypted. "
                              "Create certificates with `trustmesh fl certs DIR --host NAME` and pass "
                              "--tls-dir DIR")
        return None
    if tls_dir is not None and explicit:
        raise ConfigError("--tls-dir excludes --ssl-ca/--ssl-cert/--ssl-key; pick one")
    if tls_dir is not None:
        files = TLSFiles.from_dir(tls_dir)
    elif explicit:
        if ssl_ca is None or ssl_cert is None or ssl_key is None:
            raise ConfigError("--ssl-ca, --ssl-cert and --ssl-key go together; one of them is missing")
        files = TLSFiles.load(ssl_ca, ssl_cert, ssl_key)
    else:
        raise ConfigError("fl serve needs TLS: pass --tls-dir DIR (create it with `trustmesh fl certs DIR "
                          "--host NAME`), or --ssl-ca/--ssl-cert/--ssl-key; plain HTTP only with --insecure "
                          "on a loopback --host")
    files.check_host(host)  # flwr run and the SuperLink's own runtime dial this address
    return files


def check_site_transport(superlink: str, link_host: str, *, root_cert: Path | None = None,
                         insecure: bool = False, auth_key: Path | None = None) -> None:
    """Refuse a site's transport settings that would leak its updates: TLS (``root_cert``) unless
    ``insecure`` to a loopback SuperLink, and an enrolment key (``auth_key``) only over TLS."""
    if insecure and root_cert is not None:
        raise ConfigError("--insecure excludes --root-cert; pick one")
    if not insecure and root_cert is None:
        raise ConfigError("fl site needs --root-cert CA.pem (the coordinator's ca.pem) to verify the "
                          "SuperLink; plain HTTP only with --insecure to a loopback --superlink")
    if insecure and not is_loopback(link_host):
        raise ConfigError(f"refusing plain HTTP to non-loopback --superlink {superlink}: this site's model "
                          "updates would cross the network unencrypted; pass --root-cert CA.pem")
    if auth_key is not None:
        if insecure:
            raise ConfigError("--auth-key needs TLS (Flower signs site requests only over HTTPS); "
                              "drop --insecure")
        check_site_private_key(auth_key)

"""A self-signed certificate for ``MIM_TLS=1`` (PROTOCOL.md §11.1, §20.10), made once and kept."""

from __future__ import annotations

import datetime
import shutil
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["ensure_certificate"]

_VALID_DAYS = 3650  # nobody verifies it (§11.1); long enough never to matter


def ensure_certificate(directory: Path) -> tuple[Path, Path]:
    """Paths of ``cert.pem`` and ``key.pem`` in ``directory``, made (ECDSA P-256) if missing.

    Both are written in a staging folder renamed to ``directory`` at once, so replicas starting
    together never pair one's key with another's certificate: the first rename wins.
    """
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    _write(staging / "cert.pem", staging / "key.pem")
    try:
        staging.rename(directory)  # replaces an empty folder, fails on one made meanwhile
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return cert_path, key_path


def _write(cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Aether")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

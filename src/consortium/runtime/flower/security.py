"""TLS certificates, SuperNode keys and the roster that says which key is which member.

Flower's SuperLink serves HTTPS with a server certificate signed by a certificate authority
(CA) that every SuperNode and the ``flwr`` CLI trust (``--root-certificates``); with
``--enable-supernode-auth`` it admits only SuperNodes whose public key was registered with
``flwr supernode register`` (each SuperNode signs its requests with its private key).

Flower proves which registered key a node holds; the **roster** says which member that key
is. It is the server operator's file, one line per member::

    # consortium roster: member id = the member's SuperNode public key (OpenSSH line)
    [members]
    0 = "ecdsa-sha2-nistp384 AAAAE2VjZHNh... member-0"
    1 = "ecdsa-sha2-nistp384 AAAAE2VjZHNh... member-1"

The server maps each node to its member by the key Flower registered for it, never by what
the node declares; a node whose key is not on the roster gets no message.

The certificate and key helpers write a self-signed CA, a server certificate for given host
names / IP addresses, and EC key pairs in the OpenSSH format Flower reads. They are meant for
tests, trials and closed networks; a production federation uses certificates from its own PKI.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsFiles:
    """Paths of a CA certificate and the server certificate and key it signed."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class NodeKey:
    """Paths of a SuperNode's private key and its public key (OpenSSH format)."""

    private_key: Path
    public_key: Path


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def write_tls_certificates(
    directory: str | Path,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    *,
    days: int = 365,
    name: str = "consortium",
) -> TlsFiles:
    """Write ``ca.crt``, ``server.pem`` and ``server.key`` into ``directory``.

    ``hosts`` are the names and IP addresses SuperNodes and the ``flwr`` CLI use to reach
    the SuperLink: TLS checks the address against the certificate. ``127.0.0.1`` and
    ``localhost`` are always added, because the SuperLink's own ServerApp launcher connects
    to it over loopback with the same certificate.
    """
    hosts = list(dict.fromkeys([*hosts, "127.0.0.1", "localhost"]))
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(out / "ca.crt", out / "server.pem", out / "server.key")
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        files.server_key,
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    # The CA's key is not written: nothing else will ever be signed with it.
    return files


def write_node_key(directory: str | Path, name: str) -> NodeKey:
    """Write an EC P-384 key pair ``<name>`` / ``<name>.pub`` (OpenSSH format).

    The SuperNode starts with ``--auth-supernode-private-key <name>``; the SuperLink's
    operator registers ``<name>.pub`` with ``flwr supernode register``. Same as
    ``ssh-keygen -t ecdsa -b 384 -N "" -f <name>``.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    paths = NodeKey(out / name, out / f"{name}.pub")
    _write_private(
        paths.private_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    paths.public_key.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + b"\n"
    )
    return paths


# --- the roster ----------------------------------------------------------------------------

_NIST_CURVES = (ec.SECP192R1, ec.SECP224R1, ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


class RosterError(ValueError):
    """A roster or a key that cannot be used; the message is one line."""


def canonical_key(data: bytes | str) -> bytes:
    """A public key as DER SubjectPublicKeyInfo, from an OpenSSH line, PEM or DER.

    Flower stores a node's key as PEM; members send OpenSSH ``.pub`` files: both compare
    equal in this form.
    """
    raw = data.encode() if isinstance(data, str) else bytes(data)
    text = raw.strip()
    try:
        if text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(text)
        elif text.startswith((b"ecdsa-", b"ssh-")):
            key = serialization.load_ssh_public_key(text)
        else:
            key = serialization.load_der_public_key(raw)
    except (ValueError, TypeError) as err:
        raise RosterError(f"not a public key: {str(err).splitlines()[0]}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _NIST_CURVES):
        raise RosterError("a SuperNode key must be an EC key on a NIST curve (as Flower needs)")
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_fingerprint(data: bytes | str) -> str:
    """Short, stable name of a public key for logs (SHA-256 of its DER form)."""
    return "sha256:" + hashlib.sha256(canonical_key(data)).hexdigest()[:16]


@dataclass(frozen=True)
class Roster:
    """Member id -> public key (DER), as the server operator wrote it."""

    keys: Mapping[int, bytes]

    def __post_init__(self) -> None:
        seen: dict[bytes, int] = {}
        for member, key in self.keys.items():
            if member < 0:
                raise RosterError(f"member id {member} is negative")
            if key in seen:
                raise RosterError(f"members {seen[key]} and {member} have the same key")
            seen[key] = member

    def member_of(self, public_key: bytes | str) -> int | None:
        """The member whose key this is, or ``None`` (also for an unreadable key)."""
        if not public_key:
            return None
        try:
            key = canonical_key(public_key)
        except RosterError:
            return None
        return next((m for m, k in self.keys.items() if k == key), None)

    @property
    def members(self) -> list[int]:
        return sorted(self.keys)


def read_roster(path: str | Path) -> Roster:
    """Read a roster file (see the module docs); :class:`RosterError` names what is wrong."""
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text())["members"]
    except FileNotFoundError:
        raise RosterError(f"{path}: no such roster file") from None
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as err:
        raise RosterError(f"{path}: not a roster ([members] table: id = key): {err}") from None
    if not isinstance(table, dict) or not table:
        raise RosterError(f"{path}: the [members] table is empty")
    keys: dict[int, bytes] = {}
    for name, line in table.items():
        if not name.isdigit():
            raise RosterError(f"{path}: member id {name!r} is not a number")
        try:
            keys[int(name)] = canonical_key(str(line))
        except RosterError as err:
            raise RosterError(f"{path}: member {name}: {err}") from None
    try:
        return Roster(keys)
    except RosterError as err:
        raise RosterError(f"{path}: {err}") from None


def write_roster(path: str | Path, public_keys: Mapping[int, str | Path]) -> Path:
    """Write a roster from member id -> ``.pub`` file (what each member sent the operator)."""
    lines: dict[str, str] = {}
    for member, key_file in sorted(public_keys.items()):
        text = Path(key_file).read_text().strip()
        canonical_key(text)  # refuse a file that is not a usable key
        lines[str(int(member))] = text
    Roster({int(m): canonical_key(t) for m, t in lines.items()})  # no key twice
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# consortium roster: member id = the member's SuperNode public key (OpenSSH line)\n"
        + tomli_w.dumps({"members": lines})
    )
    return path

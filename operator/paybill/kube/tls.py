"""TLS for the emulated API server: a throwaway CA and a serving certificate for loopback, made at start.

A kube-apiserver serves HTTPS only, and clients send their credentials only over TLS (kubectl's kubeconfig
loader drops a user's token for an http:// server). The CA's certificate goes into kubeconfigs
(``certificate-authority-data``); the keys never leave this process's memory and a private temporary file
that is removed once loaded, unless the server has a state directory: then they are kept in its 0600
credentials file (``credentials``), as a kube-apiserver keeps its PKI on disk.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class ServingCertificate:
    certificate_authority: bytes  # PEM, what clients trust
    certificate: bytes  # PEM, the server's chain (leaf, then CA)
    key: bytes  # PEM, unencrypted

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        with tempfile.TemporaryDirectory(prefix="paybill-tls-") as directory:  # mode 0700
            chain, key = Path(directory) / "tls.crt", Path(directory) / "tls.key"
            chain.write_bytes(self.certificate)
            descriptor = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(self.key)
            context.load_cert_chain(chain, key)
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _authority(common_name: str, now: datetime.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A fresh self-signed CA and its key."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca, ca_key


def loopback_certificate(hosts: tuple[str, ...] = ("127.0.0.1", "::1", "localhost")) -> ServingCertificate:
    """A fresh CA and a serving certificate for the loopback names, signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca, ca_key = _authority("paybill-emulated-ca", now)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("kube-apiserver"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_pem = ca.public_bytes(pem)
    return ServingCertificate(
        certificate_authority=ca_pem,
        certificate=leaf.public_bytes(pem) + ca_pem,
        key=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


@dataclass(frozen=True)
class ClientCertificate:
    """A client certificate (TLS client auth), as kube-apiserver presents to webhooks from its admission kubeconfig."""

    certificate_authority: bytes  # PEM, what the webhook server trusts for its callers
    certificate: bytes  # PEM, the leaf
    key: bytes  # PEM, unencrypted

    def load_into(self, context: ssl.SSLContext) -> None:
        """Present this certificate on the connections `context` makes."""
        with tempfile.TemporaryDirectory(prefix="paybill-tls-") as directory:  # mode 0700
            chain, key = Path(directory) / "client.crt", Path(directory) / "client.key"
            chain.write_bytes(self.certificate)
            descriptor = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(self.key)
            context.load_cert_chain(chain, key)


def client_certificate(common_name: str = "kube-apiserver-admission") -> ClientCertificate:
    """A fresh CA and a client certificate for `common_name`, signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca, ca_key = _authority("paybill-webhook-client-ca", now)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return ClientCertificate(
        certificate_authority=ca.public_bytes(pem),
        certificate=leaf.public_bytes(pem),
        key=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )

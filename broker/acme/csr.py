"""Certificate signing requests and downloaded chains."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from broker.acme.errors import KeyFormatError
from broker.acme.keys import PrivateKey

MAX_COMMON_NAME = 64


def make_csr(key: PrivateKey, names: Sequence[str]) -> x509.CertificateSigningRequest:
    """A CSR with a DNS SAN for every name; the first name is also the CN if it fits
    (at most 64 characters), else the subject is empty."""
    if not names:
        raise ValueError("a CSR needs at least one name")
    subject = []
    if len(names[0]) <= MAX_COMMON_NAME:
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, names[0]))
    unique = list(dict.fromkeys(names))
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(subject))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in unique]), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def csr_der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def load_csr(data: bytes | str) -> x509.CertificateSigningRequest:
    """A CSR in PEM or DER whose signature verifies."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        pem = b"-----BEGIN" in raw
        csr = x509.load_pem_x509_csr(raw) if pem else x509.load_der_x509_csr(raw)
    except ValueError as exc:
        raise KeyFormatError(f"cannot read the CSR: {exc}") from None
    if not csr.is_signature_valid:
        raise KeyFormatError("the CSR's signature does not verify")
    return csr


def csr_names(csr: x509.CertificateSigningRequest) -> list[str]:
    """The DNS names a CSR asks for: its SANs, and its CN first when that is a name too."""
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = list(sans.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = []
    common = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if common and isinstance(common[0].value, str):
        names.insert(0, common[0].value)
    return list(dict.fromkeys(name.lower() for name in names))


def split_pem_chain(pem: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise KeyFormatError(f"cannot read the certificate chain: {exc}") from None


def certificate_to_pem(certificates: Sequence[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)


def load_certificate(data: bytes | str | x509.Certificate) -> x509.Certificate:
    """The first certificate of PEM text (a chain is fine), DER, or a certificate."""
    if isinstance(data, x509.Certificate):
        return data
    raw = data.encode() if isinstance(data, str) else data
    if b"-----BEGIN" in raw:
        return split_pem_chain(raw.decode())[0]
    try:
        return x509.load_der_x509_certificate(raw)
    except ValueError as exc:
        raise KeyFormatError(f"cannot read the certificate: {exc}") from None


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else name.rfc4514_string()


@dataclass(frozen=True, slots=True)
class ParsedChain:
    """A downloaded chain: the end-entity certificate and the certificates above it."""

    leaf: x509.Certificate
    issuers: tuple[x509.Certificate, ...]

    @classmethod
    def from_pem(cls, pem: str) -> ParsedChain:
        certificates = split_pem_chain(pem)
        if not certificates:
            raise KeyFormatError("the chain holds no certificate")
        return cls(certificates[0], tuple(certificates[1:]))

    @property
    def top_issuer(self) -> str:
        """The common name of the issuer of the topmost certificate (usually a root)."""
        top = self.issuers[-1] if self.issuers else self.leaf
        return _common_name(top.issuer)

    @property
    def issuer_names(self) -> tuple[str, ...]:
        return tuple(_common_name(c.issuer) for c in (self.leaf, *self.issuers))

    @property
    def not_before(self) -> datetime:
        return self.leaf.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.leaf.not_valid_after_utc


def choose_chain(chains: Sequence[ParsedChain], preferred_issuer: str | None) -> ParsedChain:
    """The first chain whose topmost issuer has the preferred common name, else the first
    chain with that issuer anywhere, else the default (first) chain."""
    if preferred_issuer is not None:
        wanted = preferred_issuer.casefold()
        for chain in chains:
            if chain.top_issuer.casefold() == wanted:
                return chain
        for chain in chains:
            if wanted in (name.casefold() for name in chain.issuer_names):
                return chain
    return chains[0]

# -*- test-case-name: tests.test_tls -*-
"""
Certificates for testing TLS: a throw-away certificate authority, server
certificates it signs, and the files and endpoint descriptions that Twisted's
C{ssl:} server and C{tls:} client endpoints read.

    from tcpcomm.certificates import makeCertificateAuthority, writeServerFiles

    ca = makeCertificateAuthority()
    files = writeServerFiles(tempfile.mkdtemp(), ca, ["localhost", "127.0.0.1"])
    files.serverDescription()          # "ssl:0:interface=127.0.0.1:privateKey=…"
    files.clientDescription(port)      # "tls:localhost:PORT:trustRoots=…"

Or without files, in a trial test:

    issued = ca.issue(["localhost"])
    server = startServer(self, TLSMemoryBIOFactory(issued.serverOptions(),
                                                   False, LineFactory()))
    endpoint = wrapClientTLS(ca.clientOptions("localhost"), server.endpoint())

Server certificates name their hosts in C{subjectAltName} (DNS names, and IP
addresses for entries that parse as one), never in the common name only:
Twisted's client verification accepts a common-name-only certificate for the
wrong host.  Keys are ECDSA on P-256, fast to make; certificates are valid
from a minute ago for a day by default.

Not for production: nothing here protects the keys it makes.

This module needs C{cryptography} (which C{tcpcomm[tls]} brings with
pyOpenSSL); importing it does not, and neither does C{import tcpcomm}.
Nothing here imports the reactor.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tcpcomm.endpoints import TLS_INSTALL_HINT

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
    from twisted.internet.ssl import CertificateOptions

__all__ = [
    "DEFAULT_VALIDITY",
    "CertificateAuthority",
    "IssuedCertificate",
    "ServerFiles",
    "escapeDescription",
    "makeCertificateAuthority",
    "writeServerFiles",
]

DEFAULT_VALIDITY = datetime.timedelta(days=1)
"""
How long certificates made here stay valid, by default.
"""

_BACKDATE = datetime.timedelta(minutes=1)
"""
How far in the past certificates start, so a peer whose clock is slightly
behind still accepts them.
"""

_NEEDS_CRYPTOGRAPHY = f"tcpcomm.certificates needs cryptography: {TLS_INSTALL_HINT}"


def escapeDescription(value: str) -> str:
    """
    Escape C{value} for use as one field of a Twisted endpoint description:
    a backslash before every C{\\}, C{:} and C{=}.

    >>> escapeDescription("/tmp/a:b/key.pem")
    '/tmp/a\\\\:b/key.pem'
    """
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def _parseIP(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _newKey() -> EllipticCurvePrivateKey:
    try:
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError as e:
        raise ImportError(_NEEDS_CRYPTOGRAPHY) from e
    return ec.generate_private_key(ec.SECP256R1())


def _keyPEM(key: EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificatePEM(certificate: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return certificate.public_bytes(serialization.Encoding.PEM)


def _validity(
    validFor: datetime.timedelta,
) -> tuple[datetime.datetime, datetime.datetime]:
    if validFor <= datetime.timedelta(0):
        raise ValueError(f"validFor must be positive, not {validFor}")
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - _BACKDATE, now + validFor


@dataclass(frozen=True)
class IssuedCertificate:
    """
    A server certificate and its private key, in PEM.

    @ivar hostnames: The names and addresses the certificate is for, in its
        C{subjectAltName}.
    @ivar keyPEM: The private key (PKCS#8, unencrypted).
    @ivar certificatePEM: The certificate.
    @ivar authorityPEM: The certificate of the authority that signed it.
    """

    hostnames: tuple[str, ...]
    keyPEM: bytes = field(repr=False)
    certificatePEM: bytes
    authorityPEM: bytes

    def serverOptions(self) -> CertificateOptions:
        """
        Twisted TLS server options that present this certificate, for
        C{TLSMemoryBIOFactory(options, False, factory)},
        C{SSL4ServerEndpoint} or C{reactor.listenSSL}.
        """
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
        from twisted.internet.ssl import CertificateOptions

        # cryptography objects, not pyOpenSSL's X509 and PKey, which
        # pyOpenSSL 24.3 and later deprecate and accept these in their place.
        # Twisted's annotations still name only pyOpenSSL's types.
        key: Any = load_pem_private_key(self.keyPEM, password=None)
        certificate: Any = x509.load_pem_x509_certificate(self.certificatePEM)
        return CertificateOptions(privateKey=key, certificate=certificate)


@dataclass(frozen=True, eq=False)
class CertificateAuthority:
    """
    A self-signed certificate authority that issues server certificates.

    Make one with L{makeCertificateAuthority}.

    @ivar name: The authority's common name.
    @ivar certificatePEM: Its certificate: what clients must trust.
    """

    name: str
    certificatePEM: bytes
    _key: EllipticCurvePrivateKey = field(repr=False)
    _certificate: x509.Certificate = field(repr=False)

    def issue(
        self,
        hostnames: Sequence[str],
        *,
        validFor: datetime.timedelta = DEFAULT_VALIDITY,
    ) -> IssuedCertificate:
        """
        Make a server certificate for C{hostnames}, signed by this authority.

        @param hostnames: Host names and IP addresses, such as
            C{["localhost", "127.0.0.1", "::1"]}.  Each becomes a
            C{subjectAltName} entry: an IP address where it parses as one,
            a DNS name (possibly C{*.example.com}) otherwise.  The first is
            also the subject's common name.
        @param validFor: How long the certificate is valid, from a minute
            ago.
        @raise ValueError: If C{hostnames} is empty or a plain string.
        """
        if isinstance(hostnames, (str, bytes)):
            raise ValueError("hostnames must be a sequence of names, not one string")
        names = tuple(hostnames)
        if not names:
            raise ValueError("a certificate needs at least one host name")
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        alternatives: list[x509.GeneralName] = []
        for name in names:
            address = _parseIP(name)
            if address is not None:
                alternatives.append(x509.IPAddress(address))
            else:
                alternatives.append(x509.DNSName(name))
        key = _newKey()
        notBefore, notAfter = _validity(validFor)
        issuerKey = self._key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
            )
            .issuer_name(self._certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(notBefore)
            .not_valid_after(notAfter)
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(
                x509.BasicConstraints(ca=False, path_length=None), critical=True
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuerKey),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return IssuedCertificate(
            hostnames=names,
            keyPEM=_keyPEM(key),
            certificatePEM=_certificatePEM(certificate),
            authorityPEM=self.certificatePEM,
        )

    def clientOptions(self, hostname: str) -> IOpenSSLClientConnectionCreator:
        """
        Twisted TLS client options that trust this authority only and check
        that the server's certificate is for C{hostname}, for
        C{wrapClientTLS(options, endpoint)}.
        """
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        return optionsForClientTLS(
            hostname, trustRoot=Certificate.loadPEM(self.certificatePEM)
        )


def makeCertificateAuthority(
    name: str = "tcpcomm test CA",
    *,
    validFor: datetime.timedelta = DEFAULT_VALIDITY,
) -> CertificateAuthority:
    """
    Make a new self-signed certificate authority with a fresh key.

    @param name: The authority's common name.
    @param validFor: How long its certificate is valid, from a minute ago.
    @raise ImportError: If C{cryptography} is missing, saying how to
        install it.
    """
    key = _newKey()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    notBefore, notAfter = _validity(validFor)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(notBefore)
        .not_valid_after(notAfter)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(
        name=name,
        certificatePEM=_certificatePEM(certificate),
        _key=key,
        _certificate=certificate,
    )


@dataclass(frozen=True)
class ServerFiles:
    """
    The files L{writeServerFiles} wrote, and endpoint descriptions that
    use them.

    @ivar directory: Where they are.
    @ivar keyPath: The server's private key, C{key.pem}.
    @ivar certificatePath: The server's certificate, C{cert.pem}.
    @ivar authorityPath: The authority's certificate, C{ca.pem}.
    @ivar trustDirectory: A directory holding only the authority's
        certificate, for the C{tls:} client endpoint's C{trustRoots=}, which
        takes a directory and trusts every C{*.pem} certificate in it.
    @ivar certificate: The server certificate that was written.
    """

    directory: str
    keyPath: str
    certificatePath: str
    authorityPath: str
    trustDirectory: str
    certificate: IssuedCertificate

    def serverDescription(self, port: int = 0, interface: str = "127.0.0.1") -> str:
        """
        A Twisted C{ssl:} server endpoint description that listens on
        C{interface} and C{port} (by default one the kernel picks) with
        this certificate.
        """
        return (
            f"ssl:{port}:interface={escapeDescription(interface)}"
            f":privateKey={escapeDescription(self.keyPath)}"
            f":certKey={escapeDescription(self.certificatePath)}"
        )

    def clientDescription(self, port: int, host: str = "localhost") -> str:
        """
        A Twisted C{tls:} client endpoint description that connects to
        C{host} and C{port} and trusts only this authority.  C{host} is
        also the name (or address) the server's certificate must carry.

        For an IPv6 address (C{"::1"}), which C{tls:} cannot connect to by
        itself, the description names the TCP endpoint to use
        (C{endpoint=tcp:…}) and C{host} is used for verification only.
        """
        host = host.strip("[]") if host.startswith("[") else host
        description = (
            f"tls:{escapeDescription(host)}:{port}"
            f":trustRoots={escapeDescription(self.trustDirectory)}"
        )
        if isinstance(_parseIP(host), ipaddress.IPv6Address):
            tcp = f"tcp:host={escapeDescription(host)}:port={port}"
            description += f":endpoint={escapeDescription(tcp)}"
        return description


def writeServerFiles(
    directory: str | os.PathLike[str],
    authority: CertificateAuthority,
    hostnames: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
) -> ServerFiles:
    """
    Issue a server certificate for C{hostnames} and write, in C{directory}
    (made if missing): C{key.pem} (the private key, mode 0600), C{cert.pem}
    (the certificate), C{ca.pem} (the authority's certificate) and
    C{trust/ca.pem} (the same, alone in a directory for C{trustRoots=}).

    @return: The paths, and endpoint descriptions that use them.
    """
    issued = authority.issue(hostnames)
    base = os.path.abspath(os.fspath(directory))
    trust = os.path.join(base, "trust")
    os.makedirs(trust, exist_ok=True)
    keyPath = os.path.join(base, "key.pem")
    certificatePath = os.path.join(base, "cert.pem")
    authorityPath = os.path.join(base, "ca.pem")
    descriptor = os.open(keyPath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(descriptor, "wb") as f:
        f.write(issued.keyPEM)
    for path, content in [
        (certificatePath, issued.certificatePEM),
        (authorityPath, authority.certificatePEM),
        (os.path.join(trust, "ca.pem"), authority.certificatePEM),
    ]:
        with open(path, "wb") as f:
            f.write(content)
    return ServerFiles(
        directory=base,
        keyPath=keyPath,
        certificatePath=certificatePath,
        authorityPath=authorityPath,
        trustDirectory=trust,
        certificate=issued,
    )

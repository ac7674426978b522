"""TLS for the relay over TCP (discovery.relay.stream): the rendezvous's self-signed
certificate, the pin members check it against, and a TLS connection whose reads and
writes may come from different threads.

Identity: an ECDSA P-256 key and a self-signed certificate made once in the state
directory (relay-tls.key, mode 0600, and relay-tls.crt). Members never consult a CA
store: they trust the certificate only when the SHA-256 of its SubjectPublicKeyInfo (the
pin, RFC 7469 section 2.4's hash input) equals the pin they got with their join token.

TlsConnection drives an ssl.SSLObject over memory BIOs (Python's ssl module) on a plain
TCP socket: the SSL object is touched only under one lock, and the socket's send and
receive directions are used by different threads, so a relay can forward into a
connection while that connection's own thread reads from it.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshwg.util.errors import MeshwgError
from meshwg.util.files import atomic_write

KEY_FILE = "relay-tls.key"
CERT_FILE = "relay-tls.crt"
PORT_FILE = "relay-tls.port"    # the TCP port the rendezvous serves it on (0: off)
DEFAULT_PORT = 443
PIN_SIZE = 32                   # SHA-256
ALPN = "meshwg-relay/1"
SEND_TIMEOUT = 10.0             # seconds a send may wait for a stalled peer before the connection ends
_RECV_SIZE = 65536


class TlsError(MeshwgError):
    """A TLS connection failed: handshake, closed early, or a certificate that does not
    match the pin."""


class PinMismatch(TlsError):
    """The peer's certificate key is not the pinned one."""


def spki_pin(certificate_der: bytes) -> bytes:
    """SHA-256 over the certificate's DER SubjectPublicKeyInfo (32 bytes)."""
    try:
        cert = x509.load_der_x509_certificate(certificate_der)
    except ValueError:
        raise TlsError("the relay's certificate does not parse") from None
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


@dataclass(frozen=True)
class Identity:
    """The relay's certificate and key files and the certificate's pin."""

    cert_path: Path
    key_path: Path
    pin: bytes

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(str(self.cert_path), str(self.key_path))
        ctx.set_alpn_protocols([ALPN])
        return ctx


def ensure_identity(state_dir: str | os.PathLike) -> Identity:
    """The identity in `state_dir`, made on first use (key 0600). Raises TlsError when
    the files cannot be read or written."""
    state = Path(state_dir)
    cert_path, key_path = state / CERT_FILE, state / KEY_FILE
    try:
        if not (cert_path.exists() and key_path.exists()):
            _make_identity(cert_path, key_path)
        der = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_bytes(
            serialization.Encoding.DER)
    except (OSError, ValueError) as exc:
        raise TlsError(f"{cert_path}: cannot make or read the relay's TLS certificate: {exc}") from None
    return Identity(cert_path, key_path, spki_pin(der))


def save_port(state_dir: str | os.PathLike, port: int) -> None:
    """Record the TCP port the relay is served on (0: off) for the tokens `meshwg invite`
    writes. Raises OSError."""
    atomic_write(Path(state_dir) / PORT_FILE, f"{port}\n", 0o644)


def saved_port(state_dir: str | os.PathLike) -> int:
    """The port save_port recorded; DEFAULT_PORT before the rendezvous first ran."""
    try:
        return int((Path(state_dir) / PORT_FILE).read_text().strip())
    except (OSError, ValueError):
        return DEFAULT_PORT


def _make_identity(cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshwg relay")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=36500))
            .sign(key, hashes.SHA256()))
    atomic_write(key_path, key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()), 0o600)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def client_context() -> ssl.SSLContext:
    """TLS 1.3, no CA store, no host name: the pin is the only check (TlsConnection.check_pin)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([ALPN])
    return ctx


class TlsConnection:
    """TLS over the connected TCP socket `sock`. After handshake(): recv() (call it when
    the socket is readable; StreamReader does) and sendall() from any thread."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_side: bool):
        self.sock = sock
        sock.settimeout(SEND_TIMEOUT)        # bounds sendall; recv runs only once poll said readable
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side)
        self._lock = threading.Lock()         # the SSL object and its BIOs
        self._send_lock = threading.Lock()    # keeps records in order on the socket
        self._eof = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def handshake(self, deadline: float) -> None:
        """Complete the handshake before `deadline` (time.monotonic()); TlsError if not."""
        while True:
            with self._lock:
                try:
                    self._tls.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    done = False
                except ssl.SSLError as exc:
                    raise TlsError(f"TLS handshake failed: {exc.reason or exc}") from None
                out = self._outgoing.read()
            try:
                if out:
                    self._send_raw(out)
                if done:
                    return
                data = self._recv_raw(deadline)
            except OSError as exc:
                raise TlsError(f"TLS handshake failed: {exc}") from None
            if not data:
                raise TlsError("TLS handshake: the connection closed or timed out")
            with self._lock:
                self._incoming.write(data)

    def check_pin(self, pin: bytes) -> None:
        """Raises PinMismatch unless the peer's certificate key hashes to `pin`."""
        with self._lock:
            der = self._tls.getpeercert(binary_form=True)
        if not der or not hmac.compare_digest(spki_pin(der), pin):
            raise PinMismatch("the relay's TLS certificate does not match the pin from the join token")

    def _recv_raw(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        if not poller.poll(int(remaining * 1000)):
            return b""
        return self.sock.recv(_RECV_SIZE)

    def _send_raw(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def recv(self, size: int = _RECV_SIZE) -> bytes:
        """The plaintext that arrived (all of it, whatever `size`); b"" at the end of the
        stream; BlockingIOError when the bytes read completed no record yet; OSError when
        the stream is not TLS."""
        data = self.sock.recv(_RECV_SIZE)
        plain = bytearray()
        with self._lock:
            if data:
                self._incoming.write(data)
            else:
                self._incoming.write_eof()
            while True:
                try:
                    chunk = self._tls.read(_RECV_SIZE)
                except ssl.SSLWantReadError:
                    break
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    self._eof = True
                    break
                except ssl.SSLError as exc:
                    raise OSError(f"TLS: {exc.reason or exc}") from None
                if not chunk:
                    self._eof = True
                    break
                plain += chunk
            out = self._outgoing.read()
        if out:
            self._send_raw(out)             # post-handshake messages (tickets, key updates)
        if plain:
            return bytes(plain)
        if self._eof or not data:
            return b""
        raise BlockingIOError

    def sendall(self, data: bytes) -> None:
        """Encrypt and send `data`; OSError (socket.timeout after SEND_TIMEOUT) when the
        peer does not take it."""
        with self._send_lock:
            with self._lock:
                try:
                    self._tls.write(data)
                except ssl.SSLError as exc:
                    raise OSError(f"TLS: {exc.reason or exc}") from None
                out = self._outgoing.read()
            self.sock.sendall(out)


def connect(address: tuple[str, int], pin: bytes, timeout: float = 10.0) -> TlsConnection:
    """A TLS connection to `address` whose certificate matches `pin`; TlsError (also for
    a refused or unreachable address) otherwise."""
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection(address, timeout=timeout)
    except OSError as exc:
        raise TlsError(f"cannot connect to the relay at TCP {address[0]}:{address[1]}: {exc}") from None
    conn = TlsConnection(sock, client_context(), server_side=False)
    try:
        conn.handshake(deadline)
        conn.check_pin(pin)
    except BaseException:
        sock.close()
        raise
    return conn

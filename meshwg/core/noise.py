"""Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s, as WireGuard uses it. No I/O, no clock.

The functions follow the handshake token by token. The prologue and the payloads are
parameters so that the same code checks against the generic Noise test vectors
(cacophony) and runs WireGuard (prologue = IDENTIFIER, payload of message 1 = TAI64N
timestamp, payload of message 2 = empty). Ephemeral keys can be injected for tests.

Each function takes `accel`: None runs the chain here (hashlib, cryptography, PyNaCl);
the compiled module meshwg.accel._noise (the device chooses it, as the data path) runs the
same steps in C and gives the same bytes. The decisions stay here either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Callable

from meshwg.core.constants import CONSTRUCTION, IDENTIFIER
from meshwg.core.crypto import (DecryptionError, WeakKeyError, aead_open, aead_seal, dh,
                                generate_private_key, hash_, kdf, public_key)

_EMPTY = b""


def initial_state(responder_static_public: bytes, prologue: bytes = IDENTIFIER,
                  protocol_name: bytes = CONSTRUCTION) -> tuple[bytes, bytes]:
    """(chaining key, hash) after the prologue and the responder's pre-message static."""
    if len(protocol_name) <= 32:
        ck = protocol_name.ljust(32, b"\x00")
    else:
        ck = hash_(protocol_name)
    h = hash_(ck, prologue)
    h = hash_(h, responder_static_public)
    return ck, h


@dataclass(slots=True)
class TransportKeys:
    send: bytes
    receive: bytes
    handshake_hash: bytes


@dataclass(slots=True)
class InitiatorState:
    """What an initiator keeps between sending message 1 and reading message 2."""
    chaining_key: bytes
    hash: bytes
    ephemeral_private: bytes
    local_static_private: bytes
    remote_static_public: bytes


@dataclass(slots=True)
class ResponderState:
    """What a responder learns from message 1."""
    chaining_key: bytes
    hash: bytes
    remote_static_public: bytes
    remote_ephemeral_public: bytes
    payload: bytes


@dataclass(slots=True)
class Message1:
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_payload: bytes


@dataclass(slots=True)
class Message2:
    ephemeral: bytes
    encrypted_payload: bytes


def write_message1(local_static_private: bytes, remote_static_public: bytes, payload: bytes,
                   *, ephemeral_private: bytes | None = None, prologue: bytes = IDENTIFIER,
                   protocol_name: bytes = CONSTRUCTION,
                   precomputed: tuple[bytes, bytes] | None = None,
                   static_static: bytes | None = None,
                   local_static_public: bytes | None = None,
                   accel: ModuleType | None = None) -> tuple[Message1, InitiatorState]:
    """Tokens e, es, s, ss, then the payload.

    `precomputed` is initial_state(remote) and `static_static` is DH(s, rs); a peer caches
    both, since neither changes between handshakes (nor does `local_static_public`).
    """
    ck, h = precomputed or initial_state(remote_static_public, prologue, protocol_name)
    if accel is not None:
        if local_static_public is None:
            local_static_public = public_key(local_static_private)
        try:
            e_pub, enc_static, enc_payload, ck, h, e_priv = accel.write_message1(
                local_static_private, local_static_public, remote_static_public, ck, h,
                static_static, payload, ephemeral_private)
        except (accel.DecryptionError, accel.WeakKeyError) as exc:
            raise _core_error(accel, exc) from None
        return (Message1(e_pub, enc_static, enc_payload),
                InitiatorState(ck, h, e_priv, local_static_private, remote_static_public))
    e_priv = ephemeral_private or generate_private_key()
    e_pub = public_key(e_priv)
    h = hash_(h, e_pub)
    (ck,) = kdf(ck, e_pub, 1)
    ck, k = kdf(ck, dh(e_priv, remote_static_public), 2)
    if local_static_public is None:
        local_static_public = public_key(local_static_private)
    enc_static = aead_seal(k, 0, local_static_public, h)
    h = hash_(h, enc_static)
    ss = static_static if static_static is not None else dh(local_static_private, remote_static_public)
    ck, k = kdf(ck, ss, 2)
    enc_payload = aead_seal(k, 0, payload, h)
    h = hash_(h, enc_payload)
    state = InitiatorState(ck, h, e_priv, local_static_private, remote_static_public)
    return Message1(e_pub, enc_static, enc_payload), state


def read_message1(local_static_private: bytes, local_static_public: bytes, message: Message1,
                  *, prologue: bytes = IDENTIFIER, protocol_name: bytes = CONSTRUCTION,
                  precomputed: tuple[bytes, bytes] | None = None,
                  static_static: Callable[[bytes], bytes | None] | None = None,
                  accel: ModuleType | None = None) -> ResponderState | None:
    """Raises crypto.DecryptionError or crypto.WeakKeyError when message 1 does not verify.

    `static_static`, given the initiator's static public key once it is decrypted, returns
    the cached DH(s, rs) of that peer (wireguard-go's precomputedStaticStatic), or None for
    a key we do not know: then the handshake stops there and None is returned. Without
    it, DH(s, rs) is computed.
    """
    ck, h = precomputed or initial_state(local_static_public, prologue, protocol_name)
    e_pub = message.ephemeral
    if accel is not None:
        try:
            read = accel.read_message1(local_static_private, ck, h, e_pub,
                                       message.encrypted_static, message.encrypted_payload,
                                       static_static)
        except (accel.DecryptionError, accel.WeakKeyError) as exc:
            raise _core_error(accel, exc) from None
        if read is None:
            return None
        ck, h, remote_static, payload = read
        return ResponderState(ck, h, remote_static, e_pub, payload)
    h = hash_(h, e_pub)
    (ck,) = kdf(ck, e_pub, 1)
    ck, k = kdf(ck, dh(local_static_private, e_pub), 2)
    remote_static = aead_open(k, 0, message.encrypted_static, h)
    h = hash_(h, message.encrypted_static)
    if static_static is None:
        ss = dh(local_static_private, remote_static)
    else:
        ss = static_static(remote_static)
        if ss is None:
            return None
    ck, k = kdf(ck, ss, 2)
    payload = aead_open(k, 0, message.encrypted_payload, h)
    h = hash_(h, message.encrypted_payload)
    return ResponderState(ck, h, remote_static, e_pub, payload)


def write_message2(state: ResponderState, psk: bytes, payload: bytes = _EMPTY, *,
                   ephemeral_private: bytes | None = None,
                   accel: ModuleType | None = None) -> tuple[Message2, TransportKeys]:
    """Tokens e, ee, se, psk, then the payload; returns the responder's transport keys."""
    ck, h = state.chaining_key, state.hash
    if accel is not None:
        try:
            e_pub, enc_payload, send, receive, h = accel.write_message2(
                ck, h, state.remote_ephemeral_public, state.remote_static_public, psk, payload,
                ephemeral_private)
        except (accel.DecryptionError, accel.WeakKeyError) as exc:
            raise _core_error(accel, exc) from None
        return Message2(e_pub, enc_payload), TransportKeys(send, receive, h)
    e_priv = ephemeral_private or generate_private_key()
    e_pub = public_key(e_priv)
    h = hash_(h, e_pub)
    (ck,) = kdf(ck, e_pub, 1)
    (ck,) = kdf(ck, dh(e_priv, state.remote_ephemeral_public), 1)
    (ck,) = kdf(ck, dh(e_priv, state.remote_static_public), 1)
    ck, tau, k = kdf(ck, psk, 3)
    h = hash_(h, tau)
    enc_payload = aead_seal(k, 0, payload, h)
    h = hash_(h, enc_payload)
    receive, send = kdf(ck, _EMPTY, 2)
    return Message2(e_pub, enc_payload), TransportKeys(send, receive, h)


def read_message2(state: InitiatorState, psk: bytes, message: Message2, *,
                  accel: ModuleType | None = None) -> tuple[bytes, TransportKeys]:
    """(payload, the initiator's transport keys); raises DecryptionError if it does not verify."""
    ck, h = state.chaining_key, state.hash
    e_pub = message.ephemeral
    if accel is not None:
        try:
            payload, send, receive, h = accel.read_message2(
                ck, h, state.ephemeral_private, state.local_static_private, psk, e_pub,
                message.encrypted_payload)
        except (accel.DecryptionError, accel.WeakKeyError) as exc:
            raise _core_error(accel, exc) from None
        return payload, TransportKeys(send, receive, h)
    h = hash_(h, e_pub)
    (ck,) = kdf(ck, e_pub, 1)
    (ck,) = kdf(ck, dh(state.ephemeral_private, e_pub), 1)
    (ck,) = kdf(ck, dh(state.local_static_private, e_pub), 1)
    ck, tau, k = kdf(ck, psk, 3)
    h = hash_(h, tau)
    payload = aead_open(k, 0, message.encrypted_payload, h)
    h = hash_(h, message.encrypted_payload)
    send, receive = kdf(ck, _EMPTY, 2)
    return payload, TransportKeys(send, receive, h)



def _core_error(accel: ModuleType, exc: Exception) -> Exception:
    """The meshwg.core.crypto exception for one the compiled chain raised, so callers
    catch one pair of exceptions whichever chain ran."""
    kind = DecryptionError if isinstance(exc, accel.DecryptionError) else WeakKeyError
    return kind(str(exc))

"""The compiled handshake chain (meshwg.accel._noise) against the Python one
(meshwg.core.noise with accel=None): the cacophony vector, the same bytes and keys for the
same keys, ephemerals and payloads (hypothesis), each side of a handshake on either chain,
hostile messages rejected with the same exception, and its primitives against
meshwg.core.crypto's. The protocol's handshake tests run again on it in
test_noise_protocol.py."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import random

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from meshwg import accel
from meshwg.core import crypto, noise
from meshwg.core.constants import IDENTIFIER
from tests.meshwg.core.test_noise_vectors import VECTOR

fast = accel.select_handshake(True, warn=False)
pytestmark = pytest.mark.skipif(fast is None, reason="compiled handshake chain not built")

key32 = st.binary(min_size=32, max_size=32)
payloads = st.binary(max_size=200)
CHAINS = [pytest.param(None, id="python"), pytest.param(fast, id="compiled")]

# Curve25519 points of small order (and non-canonical encodings of them): every DH with
# one is all zeros, which both chains refuse.
LOW_ORDER = [bytes.fromhex(x) for x in (
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bc a3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157".replace(" ", ""),
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
)]


def handshake(chain_i, chain_r, s_i: bytes, s_r: bytes, e_i: bytes, e_r: bytes, psk: bytes,
              payload1: bytes, payload2: bytes, **kw) -> dict:
    """A whole handshake, the initiator on chain_i, the responder on chain_r."""
    pub_r = crypto.public_key(s_r)
    m1, st_i = noise.write_message1(s_i, pub_r, payload1, ephemeral_private=e_i, accel=chain_i, **kw)
    st_r = noise.read_message1(s_r, pub_r, m1, accel=chain_r, **kw)
    m2, keys_r = noise.write_message2(st_r, psk, payload2, ephemeral_private=e_r, accel=chain_r)
    got2, keys_i = noise.read_message2(st_i, psk, m2, accel=chain_i)
    return {"m1": m1, "st_i": st_i, "st_r": st_r, "m2": m2, "keys_r": keys_r,
            "got2": got2, "keys_i": keys_i}


def test_cacophony_vector_on_the_compiled_chain() -> None:
    v = VECTOR
    out = handshake(fast, fast, v["init_static"], v["resp_static"], v["init_ephemeral"],
                    v["resp_ephemeral"], v["psk"], v["messages"][0][0], v["messages"][1][0],
                    prologue=v["prologue"], protocol_name=v["protocol_name"])
    m1, m2 = out["m1"], out["m2"]
    assert m1.ephemeral + m1.encrypted_static + m1.encrypted_payload == v["messages"][0][1]
    assert m2.ephemeral + m2.encrypted_payload == v["messages"][1][1]
    assert out["st_r"].payload == v["messages"][0][0]
    assert out["got2"] == v["messages"][1][0]
    assert out["keys_i"].handshake_hash == out["keys_r"].handshake_hash == v["handshake_hash"]
    assert out["keys_i"].send == out["keys_r"].receive
    assert out["keys_i"].receive == out["keys_r"].send


@settings(max_examples=60, deadline=None)
@given(s_i=key32, s_r=key32, e_i=key32, e_r=key32, psk=key32, p1=payloads, p2=payloads)
def test_same_bytes_and_keys_as_the_python_chain(s_i, s_r, e_i, e_r, psk, p1, p2) -> None:
    ref = handshake(None, None, s_i, s_r, e_i, e_r, psk, p1, p2)
    for chain_i, chain_r in ((fast, fast), (fast, None), (None, fast)):
        out = handshake(chain_i, chain_r, s_i, s_r, e_i, e_r, psk, p1, p2)
        assert out == ref


def test_wireguard_parameters_and_fresh_ephemerals() -> None:
    """WireGuard's prologue and timestamp payload, ephemerals made by the C side: the two
    sides on different chains agree, and fresh ephemerals differ between handshakes."""
    s_i, s_r = crypto.generate_private_key(), crypto.generate_private_key()
    timestamp = crypto.tai64n(1_700_000_000.5)
    seen = set()
    for chain_i, chain_r in ((fast, None), (None, fast), (fast, fast)):
        pub_r = crypto.public_key(s_r)
        m1, st_i = noise.write_message1(s_i, pub_r, timestamp, accel=chain_i, prologue=IDENTIFIER)
        st_r = noise.read_message1(s_r, pub_r, m1, accel=chain_r)
        assert st_r.payload == timestamp and st_r.remote_static_public == crypto.public_key(s_i)
        m2, keys_r = noise.write_message2(st_r, bytes(32), accel=chain_r)
        assert len(m2.encrypted_payload) == 16
        _, keys_i = noise.read_message2(st_i, bytes(32), m2, accel=chain_i)
        assert (keys_i.send, keys_i.receive) == (keys_r.receive, keys_r.send)
        seen.update((m1.ephemeral, m2.ephemeral))
    assert len(seen) == 6


def test_static_static_lookup_is_python_s_decision() -> None:
    """The responder asks Python for DH(s, rs) by the decrypted key; None stops there."""
    s_i, s_r = crypto.generate_private_key(), crypto.generate_private_key()
    pub_r = crypto.public_key(s_r)
    m1, _ = noise.write_message1(s_i, pub_r, b"ts", accel=fast)
    asked = []
    assert noise.read_message1(s_r, pub_r, m1, accel=fast,
                               static_static=lambda rs: asked.append(rs)) is None
    assert asked == [crypto.public_key(s_i)]
    ss = crypto.dh(s_r, crypto.public_key(s_i))
    state = noise.read_message1(s_r, pub_r, m1, accel=fast, static_static=lambda rs: ss)
    assert state is not None and state.payload == b"ts"
    with pytest.raises(crypto.WeakKeyError):        # the callback's own error passes through
        noise.read_message1(s_r, pub_r, m1, accel=fast,
                            static_static=lambda rs: (_ for _ in ()).throw(crypto.WeakKeyError("x")))


# ------------------------------------------------------------------ hostile input

def _outcome(chain, fn):
    try:
        return ("ok", fn(chain))
    except (crypto.DecryptionError, crypto.WeakKeyError) as exc:
        return (type(exc).__name__,)


def _message1(s_i: bytes, pub_r: bytes) -> noise.Message1:
    m1, _ = noise.write_message1(s_i, pub_r, b"timestamp!!!", ephemeral_private=os.urandom(32))
    return m1


@pytest.fixture(scope="module")
def pair() -> tuple[bytes, bytes, bytes]:
    s_i, s_r = crypto.generate_private_key(), crypto.generate_private_key()
    return s_i, s_r, crypto.public_key(s_r)


def _read1(s_r: bytes, pub_r: bytes, m1: noise.Message1):
    return lambda chain: noise.read_message1(s_r, pub_r, m1, accel=chain)


@pytest.mark.parametrize("point", LOW_ORDER)
def test_low_order_ephemeral_refused_alike(pair, point: bytes) -> None:
    s_i, s_r, pub_r = pair
    m1 = _message1(s_i, pub_r)
    m1.ephemeral = point
    results = {_outcome(chain, _read1(s_r, pub_r, m1)) for chain in (None, fast)}
    assert results == {("WeakKeyError",)}
    # and in message 2, on the initiator's side
    _, st_i = noise.write_message1(s_i, pub_r, b"t")
    bad2 = noise.Message2(point, bytes(16))
    results = {_outcome(chain, lambda c: noise.read_message2(st_i, bytes(32), bad2, accel=c))
               for chain in (None, fast)}
    assert results == {("WeakKeyError",)}


@pytest.mark.parametrize("field,value", [
    ("ephemeral", b"\x09" * 31), ("ephemeral", b"\x09" * 33), ("ephemeral", b""),
    ("encrypted_static", b""), ("encrypted_static", bytes(15)), ("encrypted_static", bytes(48)),
    ("encrypted_payload", b""), ("encrypted_payload", bytes(15)), ("encrypted_payload", bytes(28)),
])
def test_truncated_or_garbage_fields_refused_alike(pair, field: str, value: bytes) -> None:
    s_i, s_r, pub_r = pair
    m1 = _message1(s_i, pub_r)
    setattr(m1, field, value)
    py, c = (_outcome(chain, _read1(s_r, pub_r, m1)) for chain in (None, fast))
    assert py == c and py[0] != "ok"


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_any_bit_flip_or_truncation_same_outcome(pair, data) -> None:
    """A message 1 or 2 with one bit flipped or cut short: both chains fail the same way
    (a flip of the static's ciphertext may still decrypt nothing: never 'ok')."""
    s_i, s_r, pub_r = pair
    m1, st_i = noise.write_message1(s_i, pub_r, b"timestamp!!!")
    st_r = noise.read_message1(s_r, pub_r, m1)
    m2, _ = noise.write_message2(st_r, bytes(32))
    which = data.draw(st.sampled_from(["m1", "m2"]))
    raw = bytearray(m1.ephemeral + m1.encrypted_static + m1.encrypted_payload if which == "m1"
                    else m2.ephemeral + m2.encrypted_payload)
    if data.draw(st.booleans()):
        bit = data.draw(st.integers(0, len(raw) * 8 - 1))
        raw[bit // 8] ^= 1 << (bit % 8)
    else:
        del raw[data.draw(st.integers(32, len(raw) - 1)):]
    raw = bytes(raw)
    if which == "m1":
        msg = noise.Message1(raw[:32], raw[32:80], raw[80:])
        outcomes = [_outcome(chain, _read1(s_r, pub_r, msg)) for chain in (None, fast)]
    else:
        msg2 = noise.Message2(raw[:32], raw[32:])
        outcomes = [_outcome(chain, lambda c: noise.read_message2(st_i, bytes(32), msg2, accel=c))
                    for chain in (None, fast)]
    assert outcomes[0] == outcomes[1] and outcomes[0][0] != "ok"


def test_bad_argument_sizes_are_value_errors() -> None:
    with pytest.raises(ValueError):
        fast.read_message1(bytes(31), bytes(32), bytes(32), bytes(32), bytes(48), bytes(28), None)
    with pytest.raises(ValueError):
        fast.write_message2(bytes(32), bytes(32), bytes(32), bytes(32), bytes(31), b"")
    with pytest.raises(ValueError):
        fast.write_message2(bytes(32), bytes(32), bytes(32), bytes(32), bytes(32), b"",
                            bytes(5))
    with pytest.raises(ValueError):
        fast.kdf(bytes(32), b"", 4)
    with pytest.raises(ValueError):
        fast.read_message1(bytes(32), bytes(32), bytes(32), bytes(32), bytes(48), bytes(70000),
                           None)
    with pytest.raises(TypeError):
        fast.read_message1("x" * 32, bytes(32), bytes(32), bytes(32), bytes(48), bytes(28), None)


# ------------------------------------------------------------------ primitives

@settings(max_examples=100, deadline=None)
@given(key=key32, data=st.binary(max_size=300), n=st.integers(1, 3))
def test_kdf_and_hash_match_python(key: bytes, data: bytes, n: int) -> None:
    assert fast.kdf(key, data, n) == crypto.kdf(key, data, n)
    assert fast.hash(key, data) == crypto.hash_(key, data)


def test_kdf_matches_hkdf_and_a_new_key_every_call() -> None:
    """Kdf_n (libgcrypt's HMAC, its context re-keyed per call and kept for all n outputs)
    against cryptography's HKDF with BLAKE2s, alternating keys and n so that no output
    comes from the previous call's key."""
    for round_ in range(30):
        key, data, n = os.urandom(32), os.urandom(round_ * 7 % 100), 1 + round_ % 3
        expected = HKDF(algorithm=hashes.BLAKE2s(32), length=32 * n, salt=key,
                        info=None).derive(data)
        assert b"".join(fast.kdf(key, data, n)) == expected


def test_hmac_vector_of_the_kernel_selftest() -> None:
    """HMAC-BLAKE2s of the C chain (libgcrypt's HMAC), through kdf's first output of a 32-byte
    key, against the standard library's hmac over hashlib.blake2s (its RFC 2104 composition
    in Python): kdf(key, data, 1)[0] = HMAC(HMAC(key, data), 0x01)."""
    key = bytes(32)
    data = bytes(range(256))
    prk = hmac.new(key, data, hashlib.blake2s).digest()
    assert fast.kdf(key, data, 1)[0] == hmac.new(prk, b"\x01", hashlib.blake2s).digest()


def test_shared_contexts_carry_nothing_between_calls() -> None:
    """The chain's one digest and one MAC context (libgcrypt) serve every call: hashes and
    Kdf_n of every n, short and multi-block inputs, interleaved in a random order, each
    equal to the Python primitives'."""
    rng = random.Random(11)
    for _ in range(300):
        key, data = os.urandom(32), os.urandom(rng.choice((0, 1, 32, 63, 64, 65, 200, 1000)))
        if rng.random() < 0.5:
            assert fast.hash(key, data) == crypto.hash_(key, data)
        else:
            n = rng.randint(1, 3)
            assert fast.kdf(key, data, n) == crypto.kdf(key, data, n)


def test_names_its_libraries() -> None:
    assert fast.SODIUM_VERSION and fast.GCRYPT_VERSION


@settings(max_examples=50, deadline=None)
@given(a=key32, b=key32)
def test_x25519_matches_python(a: bytes, b: bytes) -> None:
    assert fast.public_key(a) == crypto.public_key(a)
    pub = crypto.public_key(b)
    assert fast.dh(a, pub) == crypto.dh(a, pub)


@pytest.mark.parametrize("point", LOW_ORDER)
def test_dh_low_order(point: bytes) -> None:
    with pytest.raises(fast.WeakKeyError):
        fast.dh(crypto.generate_private_key(), point)


# ------------------------------------------------------------------ selection

def test_selection_follows_the_data_path_switch(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    assert accel.select_handshake(False) is None
    monkeypatch.setenv("MESHWG_FASTPATH", "0")
    assert accel.select_handshake(None) is None
    monkeypatch.setenv("MESHWG_FASTPATH", "1")
    assert accel.select_handshake(None) is fast
    monkeypatch.setattr(accel, "_noise_compiled", None)
    monkeypatch.setattr(accel, "_noise_warned", False)
    with caplog.at_level(logging.WARNING, logger="meshwg.accel"):
        assert accel.select_handshake(True) is None
        assert accel.select_handshake(True) is None
    warnings = [r for r in caplog.records if "handshake chain" in r.getMessage()]
    assert len(warnings) == 1 and "pure Python" in warnings[0].getMessage()


def test_device_sets_the_chain_with_the_data_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from meshwg.device.device import Device
    monkeypatch.delenv("MESHWG_FASTPATH", raising=False)
    device = Device("mwtest0")            # not started: no interface, no socket
    try:
        assert device.protocol.handshake_accel is fast
        device.use_fastpath(False)
        assert device.protocol.handshake_accel is None
        device.use_fastpath(True)
        assert device.protocol.handshake_accel is fast
    finally:
        device.stop()

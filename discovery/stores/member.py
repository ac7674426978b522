"""A joined machine's state: a 0700 directory with ``private.key`` (0600, base64 like
``wg genkey``) and ``member.json`` (its mesh address and how to reach the rendezvous), each
replaced atomically. Errors are StateError naming the file and the problem."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

from meshwg.core import crypto
from meshwg.core.keys import KeyFormatError, decode_key, encode_key

from discovery.enroll.tokens import MAX_OTHERS, RendezvousRef
from discovery.stores.errors import StateError
from discovery.stores.private_dir import prepare_private_dir, save_private_file
from discovery.stores.rendezvous import DEFAULT_DNS_PORT
from discovery.stores.validate import public_key_bytes

MEMBER_FILE = "member.json"
PRIVATE_KEY_FILE = "private.key"
FORMAT_VERSION = 1


@dataclass
class MemberState:
    """What a joined machine keeps: its key, its address and how to reach the rendezvous."""

    private_key: bytes
    name: str
    address: str
    network: str
    zone: str
    mesh_id: str
    rendezvous_public_key: bytes
    rendezvous_endpoint: str
    dns_address: str
    dns_port: int = DEFAULT_DNS_PORT
    relay_tcp_port: int = 0         # the rendezvous's relay over TLS on TCP (0: unknown)
    relay_pin: str = ""             # its certificate's pin, hex (from the join token)
    # the mesh's other rendezvous (token, enrollment response, directory), at most MAX_OTHERS
    other_rendezvous: list[RendezvousRef] = field(default_factory=list)

    @property
    def public_key(self) -> bytes:
        return crypto.public_key(self.private_key)

    def __repr__(self) -> str:  # never print the private key
        return (f"MemberState(name={self.name!r}, address={self.address!r}, "
                f"mesh_id={self.mesh_id!r}, rendezvous_endpoint={self.rendezvous_endpoint!r})")

    @classmethod
    def from_enrollment(cls, private_key: bytes, name: str, result: object) -> "MemberState":
        """Build from the joiner's key and a discovery.enroll.messages.EnrollmentResult."""
        r = result
        return cls(private_key=private_key, name=name, address=r.address, network=r.network,
                   zone=r.zone, mesh_id=r.mesh_id, rendezvous_public_key=r.rendezvous_public_key,
                   rendezvous_endpoint=r.rendezvous_endpoint, dns_address=r.dns_address,
                   dns_port=r.dns_port)

    def save(self, state_dir: str | os.PathLike) -> None:
        """Write private.key (0600) then member.json, each atomically, in a 0700 directory.
        Raises StateError for the directory, OSError for a failed write."""
        state_dir = Path(state_dir)
        prepare_private_dir(state_dir)
        save_private_file(state_dir / PRIVATE_KEY_FILE, (encode_key(self.private_key) + "\n").encode())
        doc = asdict(self)
        del doc["private_key"]
        doc["rendezvous_public_key"] = encode_key(self.rendezvous_public_key)
        doc["other_rendezvous"] = [{**asdict(ref), "public_key": encode_key(ref.public_key),
                                    "pin": ref.pin.hex()} for ref in self.other_rendezvous]
        doc["version"] = FORMAT_VERSION
        save_private_file(state_dir / MEMBER_FILE,
                          (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())

    @classmethod
    def load(cls, state_dir: str | os.PathLike) -> "MemberState":
        """Read a saved member state; StateError naming the file and problem."""
        state_dir = Path(state_dir)
        key_path, doc_path = state_dir / PRIVATE_KEY_FILE, state_dir / MEMBER_FILE
        try:
            key_text = key_path.read_text()
            doc_text = doc_path.read_text()
        except FileNotFoundError as exc:
            raise StateError(f"{exc.filename}: missing (this machine has not joined a mesh)") from None
        except OSError as exc:
            raise StateError(f"{exc.filename}: cannot read: {exc.strerror}") from None
        mode = stat.S_IMODE(key_path.stat().st_mode)
        if mode & 0o077:
            raise StateError(f"{key_path}: private key is readable by group/others "
                             f"(mode {mode:04o}); run chmod 600 on it")
        try:
            private_key = decode_key(key_text)
        except KeyFormatError:
            raise StateError(f"{key_path}: not a base64 32-byte WireGuard private key") from None
        try:
            doc = json.loads(doc_text)
            if not isinstance(doc, dict):
                raise StateError(f"{doc_path}: expected a JSON object")
            if doc.pop("version", None) != FORMAT_VERSION:
                raise StateError(f"{doc_path}: unsupported member state version")
            for f in fields(cls):
                if f.name != "private_key" and f.default is MISSING and f.name not in doc \
                        and f.default_factory is MISSING:
                    raise KeyError(f.name)
            doc["rendezvous_public_key"] = public_key_bytes(doc["rendezvous_public_key"])
            if len(bytes.fromhex(doc.get("relay_pin", ""))) not in (0, 32):
                raise ValueError("relay_pin is not 32 bytes of hex")
            doc["other_rendezvous"] = _load_refs(doc.get("other_rendezvous", []))
            return cls(private_key=private_key, **doc)
        except json.JSONDecodeError as exc:
            raise StateError(f"{doc_path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        except KeyError as exc:
            raise StateError(f"{doc_path}: missing key {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise StateError(f"{doc_path}: invalid content ({exc})") from None


def merge_rendezvous(own_key: bytes, *sources: list[RendezvousRef] | tuple[RendezvousRef, ...]
                     ) -> list[RendezvousRef]:
    """The other rendezvous from several sources, later sources winning for one key (they
    are fresher), first-seen order kept, `own_key` (the one enrolled at) left out, at most
    MAX_OTHERS."""
    merged: dict[bytes, RendezvousRef] = {}
    for source in sources:
        for ref in source:
            if ref.public_key != own_key:
                if ref.public_key in merged and not ref.mesh_address:
                    ref = replace(ref, mesh_address=merged[ref.public_key].mesh_address)
                merged[ref.public_key] = ref
    return list(merged.values())[:MAX_OTHERS]


def _load_refs(items: object) -> list[RendezvousRef]:
    if not isinstance(items, list) or len(items) > MAX_OTHERS:
        raise ValueError(f"other_rendezvous is not a list of at most {MAX_OTHERS}")
    refs = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("other_rendezvous holds a non-object")
        pin = bytes.fromhex(item["pin"])
        if len(pin) not in (0, 32):
            raise ValueError("an other_rendezvous pin is not 32 bytes of hex")
        refs.append(RendezvousRef(public_key_bytes(item["public_key"]), str(item["endpoint"]),
                                  int(item["enroll_port"]), str(item.get("mesh_address", "")),
                                  pin, int(item.get("relay_tcp_port", 0))))
    return refs


def enrollment_key(state_dir: str | os.PathLike) -> bytes:
    """The private key to enroll with, saved (private.key, 0600) before any request so a
    membership is never granted to a key that was lost: a new one, or the one a previous
    attempt saved when member.json is still missing (the rendezvous accepts that key again
    with the same token: discovery.stores.rendezvous.redeem_invite). StateError naming
    the file when it cannot be written (a full disk): nothing was sent then."""
    state_dir = Path(state_dir)
    prepare_private_dir(state_dir)
    key_path = state_dir / PRIVATE_KEY_FILE
    if (state_dir / MEMBER_FILE).exists():
        raise StateError(f"{state_dir}: already holds a membership (never replace its key)")
    try:
        return decode_key(key_path.read_text())
    except (OSError, KeyFormatError):
        pass                            # none yet (or damaged): make one
    private = crypto.generate_private_key()
    try:
        save_private_file(key_path, (encode_key(private) + "\n").encode())
    except OSError as exc:
        raise StateError(f"{key_path}: cannot save this machine's key before enrolling: "
                         f"{exc.strerror or exc}; nothing was sent (free space and retry)") from None
    return private

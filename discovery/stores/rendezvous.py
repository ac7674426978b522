"""Persistent state of a mesh: the rendezvous's directory and a member's directory.

Rendezvous: one SQLite database (WAL, synchronous=FULL) in a 0700 directory holding
its WireGuard private key, mesh settings, members, invites and the nonces of accepted
enrollment requests. Every change is one transaction, so a crash leaves either the
old or the new state. Several processes (daemon and CLI) may open it at once.

Member (joiner): a 0700 directory with ``private.key`` (0600, base64 like ``wg genkey``)
and ``member.json``; both written by atomic replacement.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import re
import secrets
import sqlite3
import stat
import threading
import time
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator

from meshwg.core import crypto

from discovery.enroll.tokens import KEY_SIZE, SECRET_SIZE, EndpointError, Token, parse_endpoint

DB_NAME = "rendezvous.db"
SCHEMA_VERSION = 1
DEFAULT_ZONE = "mesh.internal."
DEFAULT_DNS_PORT = 53
MAX_CANDIDATES = 16
NONCE_RETENTION = 600.0  # seconds; > 2 x the allowed clock skew, so a replay is always caught

_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


# ---------------------------------------------------------------- errors


class StateError(Exception):
    """A state directory problem; the message is one line naming the file and the cause."""


class StateExistsError(StateError):
    """init() found a state that it must not overwrite."""


class UnknownMemberError(StateError):
    """No member matches the given name, key or address."""


class DuplicateMemberError(StateError):
    """The name, key or address is already taken; ``what`` says which."""

    def __init__(self, what: str, message: str):
        super().__init__(message)
        self.what = what


class MeshFullError(StateError):
    """No free address is left in the mesh network."""


class InviteRefusal(StateError):
    """An enrollment was refused; ``code`` is one of the REFUSAL_* constants."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


REFUSAL_MALFORMED = "malformed"
REFUSAL_UNKNOWN_INVITE = "unknown_invite"
REFUSAL_FORGED = "forged"
REFUSAL_EXPIRED = "expired"
REFUSAL_USED_UP = "used_up"
REFUSAL_REPLAYED = "replayed"
REFUSAL_NAME_TAKEN = "name_taken"
REFUSAL_KEY_TAKEN = "key_taken"
REFUSAL_MESH_FULL = "mesh_full"
REFUSAL_CODES = frozenset({
    REFUSAL_MALFORMED, REFUSAL_UNKNOWN_INVITE, REFUSAL_FORGED, REFUSAL_EXPIRED,
    REFUSAL_USED_UP, REFUSAL_REPLAYED, REFUSAL_NAME_TAKEN, REFUSAL_KEY_TAKEN,
    REFUSAL_MESH_FULL,
})


# ---------------------------------------------------------------- validation


def validate_name(name: str) -> str:
    """Return the member name if it is one DNS label of a-z, 0-9 and '-'; else ValueError."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"invalid member name {name!r}: use 1-63 characters a-z, 0-9 "
                         f"and '-', not starting or ending with '-'")
    return name


def validate_candidates(candidates: list[str]) -> list[str]:
    """Check host candidates ("HOST:PORT" strings); ValueError naming the bad one."""
    if not isinstance(candidates, (list, tuple)):
        raise ValueError("host candidates must be a list of HOST:PORT strings")
    if len(candidates) > MAX_CANDIDATES:
        raise ValueError(f"{len(candidates)} host candidates given, at most {MAX_CANDIDATES} allowed")
    out = []
    for cand in candidates:
        if not isinstance(cand, str) or len(cand) > 255:
            raise ValueError(f"host candidate {cand!r} is not a HOST:PORT string")
        try:
            parse_endpoint(cand)
        except EndpointError as exc:
            raise ValueError(f"host candidate: {exc}") from None
        out.append(cand)
    return out


def normalize_zone(zone: str) -> str:
    """Lowercase, fully-qualified zone name ("mesh.internal.")."""
    import dns.name  # dnspython; validates label lengths and characters

    try:
        name = dns.name.from_text(zone)
    except Exception as exc:  # dnspython raises several specific types
        raise ValueError(f"invalid zone {zone!r}: {exc}") from None
    if name == dns.name.root:
        raise ValueError("zone must not be the DNS root")
    return name.to_text().lower()


def _public_key_bytes(public_key: bytes | str) -> bytes:
    if isinstance(public_key, str):
        try:
            public_key = base64.b64decode(public_key, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"public key {public_key!r} is not base64") from None
    if not isinstance(public_key, bytes) or len(public_key) != KEY_SIZE:
        raise ValueError("a WireGuard public key is 32 bytes")
    return public_key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------- records


@dataclass
class Member:
    """One enrolled machine as the rendezvous knows it."""

    name: str
    public_key: bytes
    mesh_address: str
    joined_at: float
    last_seen: float | None = None
    host_candidates: list[str] = field(default_factory=list)

    @property
    def public_key_b64(self) -> str:
        return _b64(self.public_key)


@dataclass(frozen=True)
class Invite:
    """An invite as stored at the rendezvous (the secret never leaves this machine except in the token)."""

    invite_id: str
    secret: bytes
    reusable: bool
    expires_at: int | None
    created_at: float
    uses: int

    def refusal(self, now: float) -> InviteRefusal | None:
        """Why this invite cannot be used at `now`, or None when it can."""
        if self.expires_at is not None and now >= self.expires_at:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.expires_at))
            return InviteRefusal(REFUSAL_EXPIRED, f"the invite expired at {when}")
        if not self.reusable and self.uses >= 1:
            return InviteRefusal(REFUSAL_USED_UP,
                                 "the invite was already used (it is single-use); ask for a new one")
        return None

    def __repr__(self) -> str:
        return (f"Invite(invite_id={self.invite_id!r}, reusable={self.reusable}, "
                f"expires_at={self.expires_at}, uses={self.uses})")


def _member_from_row(row: sqlite3.Row) -> Member:
    return Member(name=row["name"], public_key=bytes(row["public_key"]),
                  mesh_address=row["address"], joined_at=row["joined_at"],
                  last_seen=row["last_seen"], host_candidates=json.loads(row["candidates"]))


def _invite_from_row(row: sqlite3.Row) -> Invite:
    return Invite(invite_id=row["id"], secret=bytes(row["secret"]), reusable=bool(row["reusable"]),
                  expires_at=row["expires_at"], created_at=row["created_at"], uses=row["uses"])


# ---------------------------------------------------------------- directories


def _prepare_private_dir(path: Path) -> None:
    """Create `path` as 0700, or accept an existing directory that only its owner can enter."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError as exc:
        raise StateError(f"{path}: cannot create state directory: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StateError(f"{path}: exists and is not a directory")
    if st.st_mode & 0o077:
        if any(path.iterdir()):
            raise StateError(f"{path}: state directory is accessible by group/others "
                             f"(mode {stat.S_IMODE(st.st_mode):04o}); run chmod 700 on it")
        os.chmod(path, 0o700)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to a temp file in the same directory, fsync, rename over `path`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE members (
    name TEXT PRIMARY KEY,
    public_key BLOB NOT NULL UNIQUE,
    address TEXT NOT NULL UNIQUE,
    joined_at REAL NOT NULL,
    last_seen REAL,
    candidates TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE invites (
    id TEXT PRIMARY KEY,
    secret BLOB NOT NULL,
    reusable INTEGER NOT NULL,
    expires_at INTEGER,
    created_at REAL NOT NULL,
    uses INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE nonces (nonce BLOB PRIMARY KEY, seen_at REAL NOT NULL);
CREATE INDEX nonces_seen_at ON nonces (seen_at);
"""


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    db.row_factory = sqlite3.Row
    return db


# ---------------------------------------------------------------- rendezvous state


class RendezvousState:
    """The rendezvous's durable state. Thread-safe; open one instance per process."""

    def __init__(self, state_dir: Path, db: sqlite3.Connection, meta: dict[str, str]):
        self.state_dir = state_dir
        self._db = db
        self._lock = threading.RLock()
        self._meta = meta
        self.private_key: bytes = base64.b64decode(meta["private_key"])
        self.public_key: bytes = crypto.public_key(self.private_key)
        self.network: str = meta["network"]
        self.endpoint: str = meta["endpoint"]
        self.zone: str = meta["zone"]
        self.listen_port: int = int(meta["listen_port"])
        self.enroll_port: int = int(meta["enroll_port"])
        self.dns_port: int = int(meta["dns_port"])
        self.interface: str = meta["interface"]
        self.mesh_id: str = meta["mesh_id"]
        self.address: str = meta["address"]  # the rendezvous's own mesh address

    # ---- lifecycle

    @classmethod
    def init(cls, state_dir: str | os.PathLike, network: str, endpoint: str,
             zone: str = DEFAULT_ZONE, listen_port: int | None = None,
             interface: str = "meshwg0", *, enroll_port: int | None = None,
             dns_port: int = DEFAULT_DNS_PORT) -> "RendezvousState":
        """Create a new rendezvous state; refuse if one already exists in `state_dir`.

        `network` is the mesh CIDR (its first host address becomes the rendezvous's),
        `endpoint` the public "HOST:PORT" members reach over UDP. `listen_port` defaults
        to the endpoint's port, `enroll_port` (TCP) to `listen_port`.
        """
        state_dir = Path(state_dir)
        try:
            net = ipaddress.ip_network(network, strict=True)
        except ValueError as exc:
            raise StateError(f"network {network!r}: {exc}") from None
        hosts = iter(net.hosts())  # a list for /31 and /32, a generator otherwise
        first = next(hosts, None)
        if first is None or next(hosts, None) is None:
            raise StateError(f"network {network!r} has room for fewer than 2 hosts")
        try:
            _, endpoint_port = parse_endpoint(endpoint)
            zone = normalize_zone(zone)
        except ValueError as exc:
            raise StateError(str(exc)) from None
        listen_port = endpoint_port if listen_port is None else listen_port
        enroll_port = listen_port if enroll_port is None else enroll_port
        for what, port in (("listen port", listen_port), ("enroll port", enroll_port),
                           ("dns port", dns_port)):
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise StateError(f"{what} {port!r} is not in 1..65535")
        if not _IFNAME_RE.match(interface or ""):
            raise StateError(f"interface name {interface!r}: use 1-15 of A-Z a-z 0-9 _ . -")

        path = state_dir / DB_NAME
        if path.exists():
            raise StateExistsError(f"{path}: a rendezvous state already exists; "
                                   f"refusing to overwrite it")
        _prepare_private_dir(state_dir)
        meta = {
            "schema_version": str(SCHEMA_VERSION),
            "private_key": _b64(crypto.generate_private_key()),
            "network": str(net),
            "endpoint": endpoint,
            "zone": zone,
            "listen_port": str(listen_port),
            "enroll_port": str(enroll_port),
            "dns_port": str(dns_port),
            "interface": interface,
            "mesh_id": secrets.token_hex(16),
            "address": str(first),
            "created_at": repr(time.time()),
        }
        # Build the database under a temporary name, then link it into place: link()
        # fails if the target exists, so two concurrent inits cannot both win.
        tmp = state_dir / f".{DB_NAME}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            db = _connect(tmp)
            try:
                db.execute("PRAGMA synchronous=FULL")
                db.execute("BEGIN")
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
                db.execute("COMMIT")
            finally:
                db.close()
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise StateExistsError(f"{path}: a rendezvous state already exists; "
                                       f"refusing to overwrite it") from None
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(state_dir)
        return cls.open(state_dir)

    @classmethod
    def open(cls, state_dir: str | os.PathLike) -> "RendezvousState":
        """Open an existing rendezvous state (StateError if missing or not one)."""
        state_dir = Path(state_dir)
        path = state_dir / DB_NAME
        if not path.is_file():
            raise StateError(f"{path}: no rendezvous state here (create one with init)")
        db = _connect(path)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            meta = {row["key"]: row["value"] for row in db.execute("SELECT key, value FROM meta")}
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StateError(f"{path}: not a readable meshwg state database ({exc})") from None
        version = meta.get("schema_version")
        if version != str(SCHEMA_VERSION):
            db.close()
            raise StateError(f"{path}: state schema version {version!r} is not supported "
                             f"(expected {SCHEMA_VERSION})")
        return cls(state_dir, db, meta)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "RendezvousState":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ---- members

    def members(self) -> list[Member]:
        """All enrolled members, in order of joining."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM members ORDER BY joined_at, name").fetchall()
        return [_member_from_row(r) for r in rows]

    def find_member(self, ref: str | bytes) -> Member | None:
        """The member whose name, mesh address, public key (bytes or base64) is `ref`."""
        with self._lock:
            row = self._find_row(self._db, ref)
        return _member_from_row(row) if row else None

    @staticmethod
    def _find_row(db: sqlite3.Connection, ref: str | bytes) -> sqlite3.Row | None:
        if isinstance(ref, bytes):
            return db.execute("SELECT * FROM members WHERE public_key = ?", (ref,)).fetchone()
        row = db.execute("SELECT * FROM members WHERE name = ? OR address = ?",
                         (ref, ref)).fetchone()
        if row is None:
            try:
                key = _public_key_bytes(ref)
            except ValueError:
                return None
            row = db.execute("SELECT * FROM members WHERE public_key = ?", (key,)).fetchone()
        return row

    def add_member(self, name: str, public_key: bytes, address: str | None = None,
                   host_candidates: list[str] | None = None, now: float | None = None) -> Member:
        """Add a member (address None = first free); DuplicateMemberError if anything is taken."""
        try:
            validate_name(name)
            public_key = _public_key_bytes(public_key)
            candidates = validate_candidates(host_candidates or [])
        except ValueError as exc:
            raise StateError(str(exc)) from None
        now = time.time() if now is None else now
        with self._transaction() as db:
            return self._insert_member(db, name, public_key, address, candidates, now)

    def _insert_member(self, db: sqlite3.Connection, name: str, public_key: bytes,
                       address: str | None, candidates: list[str], now: float) -> Member:
        row = db.execute("SELECT name FROM members WHERE name = ?", (name,)).fetchone()
        if row:
            raise DuplicateMemberError("name", f"member name {name!r} is already enrolled")
        row = db.execute("SELECT name FROM members WHERE public_key = ?", (public_key,)).fetchone()
        if row or public_key == self.public_key:
            owner = row["name"] if row else "the rendezvous"
            raise DuplicateMemberError("public_key", f"public key {_b64(public_key)} is already enrolled "
                                       f"as {owner!r}")
        if address is None:
            address = self._first_free(db)
        else:
            address = self._check_address(db, address)
        db.execute("INSERT INTO members (name, public_key, address, joined_at, candidates) "
                   "VALUES (?, ?, ?, ?, ?)", (name, public_key, address, now, json.dumps(candidates)))
        return Member(name, public_key, address, now, None, list(candidates))

    def _check_address(self, db: sqlite3.Connection, address: str) -> str:
        net = ipaddress.ip_network(self.network)
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise StateError(f"address {address!r} is not an IP address") from None
        if ip not in net or (ip in (net.network_address, net.broadcast_address)
                              and net.num_addresses > 2):
            raise StateError(f"address {address} is not a host address of {self.network}")
        if str(ip) == self.address:
            raise DuplicateMemberError("address", f"address {ip} is the rendezvous's own address")
        row = db.execute("SELECT name FROM members WHERE address = ?", (str(ip),)).fetchone()
        if row:
            raise DuplicateMemberError("address", f"address {ip} is already assigned to {row['name']!r}")
        return str(ip)

    def _first_free(self, db: sqlite3.Connection) -> str:
        used = {r["address"] for r in db.execute("SELECT address FROM members")}
        used.add(self.address)
        for ip in ipaddress.ip_network(self.network).hosts():
            if str(ip) not in used:
                return str(ip)
        raise MeshFullError(f"no free address left in {self.network} "
                            f"({len(used)} taken, rendezvous included)")

    def allocate_address(self) -> str:
        """The first free host address (MeshFullError when none); it is not reserved."""
        with self._lock:
            return self._first_free(self._db)

    def remove_member(self, ref: str | bytes) -> Member:
        """Remove by name, mesh address or public key; UnknownMemberError if none matches."""
        with self._transaction() as db:
            row = self._find_row(db, ref)
            if row is None:
                shown = _b64(ref) if isinstance(ref, bytes) else ref
                raise UnknownMemberError(f"no member with name, address or public key {shown!r}")
            db.execute("DELETE FROM members WHERE name = ?", (row["name"],))
        return _member_from_row(row)

    def update_candidates(self, public_key: bytes, candidates: list[str],
                          now: float | None = None) -> Member:
        """Replace a member's host candidates and mark it seen at `now`."""
        try:
            candidates = validate_candidates(candidates)
        except ValueError as exc:
            raise StateError(str(exc)) from None
        now = time.time() if now is None else now
        with self._transaction() as db:
            cur = db.execute("UPDATE members SET candidates = ?, last_seen = ? WHERE public_key = ?",
                             (json.dumps(candidates), now, public_key))
            if cur.rowcount == 0:
                raise UnknownMemberError(f"no member with public key {_b64(public_key)}")
            row = db.execute("SELECT * FROM members WHERE public_key = ?", (public_key,)).fetchone()
        return _member_from_row(row)

    # ---- invites

    def create_invite(self, reusable: bool = False, expires_in: float | None = None,
                      now: float | None = None, enroll_port: int | None = None) -> Token:
        """Record a new invite and return its token (expires_in seconds; None = never)."""
        if expires_in is not None and expires_in <= 0:
            raise StateError(f"invite lifetime {expires_in!r} s must be positive")
        now = time.time() if now is None else now
        invite_id = secrets.token_hex(16)
        secret = secrets.token_bytes(SECRET_SIZE)
        expires_at = None if expires_in is None else int(now + expires_in)
        with self._transaction() as db:
            db.execute("INSERT INTO invites (id, secret, reusable, expires_at, created_at) "
                       "VALUES (?, ?, ?, ?, ?)", (invite_id, secret, int(reusable), expires_at, now))
        return Token(endpoint=self.endpoint, rendezvous_public_key=self.public_key,
                     invite_id=invite_id, secret=secret, expires_at=expires_at,
                     mesh_id=self.mesh_id, enroll_port=enroll_port or self.enroll_port)

    def invite(self, invite_id: str) -> Invite | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM invites WHERE id = ?", (invite_id,)).fetchone()
        return _invite_from_row(row) if row else None

    def invites(self) -> list[Invite]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM invites ORDER BY created_at").fetchall()
        return [_invite_from_row(r) for r in rows]

    def revoke_invite(self, invite_id: str) -> None:
        """Delete an invite; later requests with it are refused as unknown."""
        with self._transaction() as db:
            if db.execute("DELETE FROM invites WHERE id = ?", (invite_id,)).rowcount == 0:
                raise StateError(f"no invite with id {invite_id!r}")

    def redeem_invite(self, invite_id: str, nonce: bytes, name: str, public_key: bytes,
                      host_candidates: list[str], now: float) -> Member:
        """Atomically: record the nonce, check the invite, add the member, count the use.

        The caller has already verified the request's proof and timestamp. Raises
        InviteRefusal; the nonce stays recorded even then, so the same request can never
        be replayed later with a different outcome.
        """
        try:
            validate_name(name)
            public_key = _public_key_bytes(public_key)
            host_candidates = validate_candidates(host_candidates)
        except ValueError as exc:
            raise StateError(str(exc)) from None
        with self._transaction() as db:
            db.execute("DELETE FROM nonces WHERE seen_at < ?", (now - NONCE_RETENTION,))
            if db.execute("SELECT 1 FROM nonces WHERE nonce = ?", (nonce,)).fetchone():
                refusal = InviteRefusal(REFUSAL_REPLAYED,
                                        "this request was already received (replayed request)")
            else:
                db.execute("INSERT INTO nonces (nonce, seen_at) VALUES (?, ?)", (nonce, now))
                refusal = self._redeem_refusal(db, invite_id, now)
            if refusal is None:
                try:
                    member = self._insert_member(db, name, public_key, None, host_candidates, now)
                except DuplicateMemberError as exc:
                    code = REFUSAL_NAME_TAKEN if exc.what == "name" else REFUSAL_KEY_TAKEN
                    refusal = InviteRefusal(code, str(exc))
                except MeshFullError as exc:
                    refusal = InviteRefusal(REFUSAL_MESH_FULL, str(exc))
                else:
                    db.execute("UPDATE invites SET uses = uses + 1 WHERE id = ?", (invite_id,))
                    return member
        raise refusal  # committed: only the nonce was written

    @staticmethod
    def _redeem_refusal(db: sqlite3.Connection, invite_id: str, now: float) -> InviteRefusal | None:
        row = db.execute("SELECT * FROM invites WHERE id = ?", (invite_id,)).fetchone()
        if row is None:
            return InviteRefusal(REFUSAL_UNKNOWN_INVITE,
                                 "the rendezvous does not know this invite (revoked?)")
        return _invite_from_row(row).refusal(now)


# ---------------------------------------------------------------- member (joiner) state

MEMBER_FILE = "member.json"
PRIVATE_KEY_FILE = "private.key"


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

    @property
    def public_key(self) -> bytes:
        return crypto.public_key(self.private_key)

    def __repr__(self) -> str:  # never print the private key
        return (f"MemberState(name={self.name!r}, address={self.address!r}, "
                f"mesh_id={self.mesh_id!r}, rendezvous_endpoint={self.rendezvous_endpoint!r})")

    @classmethod
    def from_enrollment(cls, private_key: bytes, name: str, result: object) -> "MemberState":
        """Build from the joiner's key and an enroll.EnrollmentResult."""
        r = result
        return cls(private_key=private_key, name=name, address=r.address, network=r.network,
                   zone=r.zone, mesh_id=r.mesh_id, rendezvous_public_key=r.rendezvous_public_key,
                   rendezvous_endpoint=r.rendezvous_endpoint, dns_address=r.dns_address,
                   dns_port=r.dns_port)

    def save(self, state_dir: str | os.PathLike) -> None:
        """Write private.key (0600) then member.json, each atomically, in a 0700 directory."""
        state_dir = Path(state_dir)
        _prepare_private_dir(state_dir)
        _atomic_write(state_dir / PRIVATE_KEY_FILE, (_b64(self.private_key) + "\n").encode())
        doc = asdict(self)
        del doc["private_key"]
        doc["rendezvous_public_key"] = _b64(self.rendezvous_public_key)
        doc["version"] = 1
        _atomic_write(state_dir / MEMBER_FILE,
                      (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), 0o600)

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
            private_key = base64.b64decode(key_text.strip(), validate=True)
            if len(private_key) != KEY_SIZE:
                raise ValueError
        except (binascii.Error, ValueError):
            raise StateError(f"{key_path}: not a base64 32-byte WireGuard private key") from None
        try:
            doc = json.loads(doc_text)
            if not isinstance(doc, dict):
                raise StateError(f"{doc_path}: expected a JSON object")
            if doc.pop("version", None) != 1:
                raise StateError(f"{doc_path}: unsupported member state version")
            for f in fields(cls):
                if f.name != "private_key" and f.default is MISSING and f.name not in doc:
                    raise KeyError(f.name)
            doc["rendezvous_public_key"] = _public_key_bytes(doc["rendezvous_public_key"])
            return cls(private_key=private_key, **doc)
        except json.JSONDecodeError as exc:
            raise StateError(f"{doc_path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        except KeyError as exc:
            raise StateError(f"{doc_path}: missing key {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise StateError(f"{doc_path}: invalid content ({exc})") from None

"""The rendezvous's durable state: one SQLite database (WAL, synchronous=FULL) in a 0700
directory holding its WireGuard private key, mesh settings, members, invites and the
nonces of accepted enrollment requests. Every change is one transaction, so a crash leaves
either the old or the new state. Several processes (daemon and CLI) may open it at once.

Errors are StateError and its subclasses (discovery.stores.errors); refused enrollments
raise InviteRefusal (discovery.stores.invites).
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from meshwg.core import crypto
from meshwg.core.keys import KEY_SIZE, decode_key, encode_key
from meshwg.util.endpoint import parse_endpoint

from discovery.enroll.tokens import SECRET_SIZE, Token
from discovery.stores.errors import (
    DuplicateMemberError, MeshFullError, StateError, StateExistsError, StorageError,
    UnknownInviteError,
    UnknownMemberError,
)
from discovery.stores.invites import (
    REFUSAL_KEY_TAKEN, REFUSAL_MALFORMED, REFUSAL_MESH_FULL, REFUSAL_NAME_TAKEN, REFUSAL_REPLAYED,
    REFUSAL_UNKNOWN_INVITE, Invite, InviteRefusal,
)
from discovery.stores.private_dir import fsync_dir, prepare_private_dir
from discovery.stores.validate import (
    check_strong_key, host_address, normalize_zone, public_key_bytes, validate_candidates,
    validate_interface_name, validate_name,
)

DB_NAME = "rendezvous.db"
SCHEMA_VERSION = 1
DEFAULT_ZONE = "mesh.internal."
DEFAULT_DNS_PORT = 53
MIN_INVITE_PREFIX = 8    # hex digits of an invite id that name it on the command line
WAL_CHECKPOINT_PAGES = 256     # 1 MiB of 4 KiB pages
WAL_SIZE_LIMIT = 1 << 20       # bytes the write-ahead log keeps after a checkpoint
NONCE_RETENTION = 600.0  # seconds; > 2 x the allowed clock skew, so a replay is always caught


@dataclass
class Member:
    """One enrolled machine as the rendezvous knows it (times in unix seconds; host
    candidates as "HOST:PORT" strings)."""

    name: str
    public_key: bytes
    mesh_address: str
    joined_at: float
    last_seen: float | None = None
    host_candidates: list[str] = field(default_factory=list)
    invite_id: str | None = None    # the invite it enrolled with (None: added by hand or unknown)

    @property
    def public_key_b64(self) -> str:
        return encode_key(self.public_key)


def _member_from_row(row: sqlite3.Row) -> Member:
    return Member(name=row["name"], public_key=bytes(row["public_key"]),
                  mesh_address=row["address"], joined_at=row["joined_at"],
                  last_seen=row["last_seen"], host_candidates=json.loads(row["candidates"]),
                  invite_id=row["invite"])


def _add_invite_column(db: sqlite3.Connection) -> None:
    """States made before members recorded their invite get the column (NULL: unknown)."""
    columns = {row["name"] for row in db.execute("PRAGMA table_info(members)")}
    if "invite" not in columns:
        try:
            db.execute("ALTER TABLE members ADD COLUMN invite TEXT")
        except sqlite3.OperationalError as exc:      # another process added it meanwhile
            if "duplicate column" not in str(exc):
                raise


def _invite_from_row(row: sqlite3.Row) -> Invite:
    return Invite(invite_id=row["id"], secret=bytes(row["secret"]), reusable=bool(row["reusable"]),
                  expires_at=row["expires_at"], created_at=row["created_at"], uses=row["uses"])


def _shown(ref: str | bytes) -> str:
    """A member reference as an error message shows it (a key as base64)."""
    if isinstance(ref, bytes):
        return encode_key(ref) if len(ref) == KEY_SIZE else ref.hex()
    return ref


_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE members (
    name TEXT PRIMARY KEY,
    public_key BLOB NOT NULL UNIQUE,
    address TEXT NOT NULL UNIQUE,
    joined_at REAL NOT NULL,
    last_seen REAL,
    candidates TEXT NOT NULL DEFAULT '[]',
    invite TEXT
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
        self.private_key: bytes = decode_key(meta["private_key"], "private_key")
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
        # "dns://HOST:PORT[,dns://...]" when the membership lives in a DNS zone
        # (discovery.stores.zone_rendezvous); "" for the embedded SQLite membership
        self.directory: str = meta.get("directory", "")

    def setting(self, key: str) -> str:
        """A saved setting of the state (its meta table) by name; "" when absent."""
        return self._meta.get(key, "")

    # ---- lifecycle

    @classmethod
    def init(cls, state_dir: str | os.PathLike, network: str, endpoint: str,
             zone: str = DEFAULT_ZONE, listen_port: int | None = None,
             interface: str = "meshwg0", *, enroll_port: int | None = None,
             dns_port: int = DEFAULT_DNS_PORT, private_key: bytes | None = None,
             mesh_id: str | None = None, address: str | None = None,
             extra_meta: dict[str, str] | None = None) -> "RendezvousState":
        """Create a new rendezvous state; refuse if one already exists in `state_dir`.

        `network` is the mesh CIDR (its first host address becomes the rendezvous's),
        `endpoint` the public "HOST:PORT" members reach over UDP. `listen_port` defaults
        to the endpoint's port, `enroll_port` (TCP) to `listen_port`. A rendezvous on a DNS
        directory (discovery.stores.zone_rendezvous) gives the key, the mesh id and the
        address the zone holds, and its directory settings in `extra_meta`.
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
        try:
            validate_interface_name(interface)
        except ValueError as exc:
            raise StateError(str(exc)) from None

        if address is not None:
            try:
                address = host_address(str(net), address)
            except ValueError as exc:
                raise StateError(str(exc)) from None
        path = state_dir / DB_NAME
        if path.exists():
            raise StateExistsError(f"{path}: a rendezvous state already exists; "
                                   f"refusing to overwrite it")
        prepare_private_dir(state_dir)
        meta = {
            **(extra_meta or {}),
            "schema_version": str(SCHEMA_VERSION),
            "private_key": encode_key(private_key or crypto.generate_private_key()),
            "network": str(net),
            "endpoint": endpoint,
            "zone": zone,
            "listen_port": str(listen_port),
            "enroll_port": str(enroll_port),
            "dns_port": str(dns_port),
            "interface": interface,
            "mesh_id": mesh_id or secrets.token_hex(16),
            "address": address or str(first),
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
        fsync_dir(state_dir)
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
            # bound the write-ahead log: checkpoint every WAL_CHECKPOINT_PAGES pages and
            # truncate it back to WAL_SIZE_LIMIT bytes afterwards (else it keeps its peak)
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            meta = {row["key"]: row["value"] for row in db.execute("SELECT key, value FROM meta")}
            _add_invite_column(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StateError(f"{path}: not a readable meshwg state database ({exc})") from None
        version = meta.get("schema_version")
        if version != str(SCHEMA_VERSION):
            db.close()
            raise StateError(f"{path}: state schema version {version!r} is not supported "
                             f"(expected {SCHEMA_VERSION})")
        try:
            return cls(state_dir, db, meta)
        except (KeyError, ValueError) as exc:
            db.close()
            raise StateError(f"{path}: damaged settings ({exc})") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "RendezvousState":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception. A database that
        cannot be written (a full disk, an I/O error, locked beyond the busy timeout)
        raises StorageError; the next transaction tries again, so the state recovers as
        soon as it can write."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass            # SQLite rolled back already (SQLITE_FULL, SQLITE_IOERR)
                    raise
            except sqlite3.OperationalError as exc:
                raise StorageError(f"{self.state_dir / DB_NAME}: cannot write the rendezvous "
                                   f"state: {exc}") from None

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
                key = public_key_bytes(ref)
            except ValueError:
                return None
            row = db.execute("SELECT * FROM members WHERE public_key = ?", (key,)).fetchone()
        return row

    def add_member(self, name: str, public_key: bytes, address: str | None = None,
                   host_candidates: list[str] | None = None, now: float | None = None) -> Member:
        """Add a member (address None = first free); DuplicateMemberError if anything is taken."""
        try:
            validate_name(name)
            public_key = check_strong_key(public_key_bytes(public_key))
            candidates = validate_candidates(host_candidates or [])
        except ValueError as exc:
            raise StateError(str(exc)) from None
        now = time.time() if now is None else now
        with self._transaction() as db:
            return self._insert_member(db, name, public_key, address, candidates, now)

    def _insert_member(self, db: sqlite3.Connection, name: str, public_key: bytes,
                       address: str | None, candidates: list[str], now: float,
                       invite_id: str | None = None) -> Member:
        row = db.execute("SELECT name FROM members WHERE name = ?", (name,)).fetchone()
        if row:
            raise DuplicateMemberError("name", f"member name {name!r} is already enrolled")
        row = db.execute("SELECT name FROM members WHERE public_key = ?", (public_key,)).fetchone()
        if row or public_key == self.public_key:
            owner = row["name"] if row else "the rendezvous"
            raise DuplicateMemberError("public_key", f"public key {_shown(public_key)} is already enrolled "
                                       f"as {owner!r}")
        if address is None:
            address = self._first_free(db)
        else:
            address = self._check_address(db, address)
        db.execute("INSERT INTO members (name, public_key, address, joined_at, candidates, invite) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   (name, public_key, address, now, json.dumps(candidates), invite_id))
        return Member(name, public_key, address, now, None, list(candidates), invite_id)

    def _check_address(self, db: sqlite3.Connection, address: str) -> str:
        try:
            ip = host_address(self.network, address)
        except ValueError as exc:
            raise StateError(str(exc)) from None
        if ip == self.address:
            raise DuplicateMemberError("address", f"address {ip} is the rendezvous's own address")
        row = db.execute("SELECT name FROM members WHERE address = ?", (str(ip),)).fetchone()
        if row:
            raise DuplicateMemberError("address", f"address {ip} is already assigned to {row['name']!r}")
        return ip

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

    def remove_member(self, ref: str | bytes, revoke_invite: bool = False) -> Member:
        """Remove by name, mesh address or public key; UnknownMemberError if none matches.
        With `revoke_invite`, the invite it enrolled with is withdrawn in the same
        transaction (a leaked reusable token cannot bring it back)."""
        with self._transaction() as db:
            row = self._find_row(db, ref)
            if row is None:
                raise UnknownMemberError(f"no member with name, address or public key "
                                         f"{_shown(ref)!r}")
            db.execute("DELETE FROM members WHERE name = ?", (row["name"],))
            if revoke_invite and row["invite"]:
                db.execute("DELETE FROM invites WHERE id = ?", (row["invite"],))
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
                raise UnknownMemberError(f"no member with public key {_shown(public_key)}")
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
        """Every invite not revoked, oldest first (expired and used-up ones included)."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM invites ORDER BY created_at").fetchall()
        return [_invite_from_row(r) for r in rows]

    def invite_members(self, invite_id: str) -> list[str]:
        """Names of the current members that enrolled with invite `invite_id`."""
        with self._lock:
            rows = self._db.execute("SELECT name FROM members WHERE invite = ? ORDER BY joined_at",
                                    (invite_id,)).fetchall()
        return [r["name"] for r in rows]

    def revoke_invite(self, ref: str) -> Invite:
        """Withdraw the invite whose id is `ref` or starts with it (at least
        MIN_INVITE_PREFIX hex digits, as `meshwg invites` shows them): its token enrolls
        no one from now on; members it enrolled stay. UnknownInviteError when none or
        several match."""
        ref = ref.strip().lower()
        if len(ref) < MIN_INVITE_PREFIX or any(c not in "0123456789abcdef" for c in ref):
            raise UnknownInviteError(f"invite id {ref!r}: give at least {MIN_INVITE_PREFIX} "
                                     f"hex digits of an id `meshwg invites` lists")
        with self._transaction() as db:
            rows = db.execute("SELECT * FROM invites WHERE substr(id, 1, ?) = ?",
                              (len(ref), ref)).fetchall()
            if len(rows) != 1:
                raise UnknownInviteError(f"invite id {ref!r} matches "
                                         f"{'no invite' if not rows else f'{len(rows)} invites'}")
            db.execute("DELETE FROM invites WHERE id = ?", (rows[0]["id"],))
        return _invite_from_row(rows[0])

    def redeem_invite(self, invite_id: str, nonce: bytes, name: str, public_key: bytes,
                      host_candidates: list[str], now: float) -> Member:
        """Atomically: record the nonce, check the invite, add the member, count the use.
        A new request (new nonce) with the same invite, name and key as an existing member
        is a retry and returns that member unchanged, so a joiner that lost the answer or
        could not save it enrolls again with the same token (even a single-use one).

        The caller has already verified the request's proof and timestamp. Raises
        InviteRefusal; the nonce stays recorded even then, so the same request can never
        be replayed later with a different outcome.
        """
        try:
            validate_name(name)
            public_key = check_strong_key(public_key_bytes(public_key))
            host_candidates = validate_candidates(host_candidates)
        except ValueError as exc:
            raise InviteRefusal(REFUSAL_MALFORMED, str(exc)) from None
        with self._transaction() as db:
            db.execute("DELETE FROM nonces WHERE seen_at < ?", (now - NONCE_RETENTION,))
            if db.execute("SELECT 1 FROM nonces WHERE nonce = ?", (nonce,)).fetchone():
                refusal = InviteRefusal(REFUSAL_REPLAYED,
                                        "this request was already received (replayed request)")
            else:
                db.execute("INSERT INTO nonces (nonce, seen_at) VALUES (?, ?)", (nonce, now))
                row = db.execute("SELECT * FROM members WHERE public_key = ? AND name = ? "
                                 "AND invite = ?", (public_key, name, invite_id)).fetchone()
                if row is not None:     # a retry: the joiner did not get or keep the answer
                    return _member_from_row(row)
                refusal = self._redeem_refusal(db, invite_id, now)
            if refusal is None:
                try:
                    member = self._insert_member(db, name, public_key, None, host_candidates, now,
                                                 invite_id)
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


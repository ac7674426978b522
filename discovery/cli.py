"""The mesh subcommands of `meshwg`: rendezvous, invite, members, remove, join, status, netcheck,
lab."""

from __future__ import annotations

import json
import os
import re
import sys
import time

from meshwg.cli.common import CliError, StopSignal, check_privileges, run_in_foreground
from meshwg.util.errors import MeshwgError
from meshwg.core.keys import encode_key
from meshwg.util.endpoint import format_endpoint

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


MAX_TOKEN_TEXT = 4096          # characters of a token file (a token is ~200)


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '12h', '7d', '2w' -> seconds."""
    m = _DURATION.match(text or "")
    if not m or float(m.group(1)) <= 0:
        raise CliError(f"--expires {text!r}: expected a positive duration like 30m, 12h or 7d")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    from discovery.stores.zone_membership import TIME_BOUND     # what a directory reads back
    if not seconds < TIME_BOUND - time.time():
        raise CliError(f"--expires {text!r}: too far; an invite must expire before "
                       f"{time.strftime('%Y', time.gmtime(TIME_BOUND))} (unix time "
                       f"{int(TIME_BOUND)}); leave --expires out for an invite that never expires")
    return seconds


# ---------------------------------------------------------------- rendezvous
def cmd_rendezvous_init(args) -> int:
    from discovery.stores.rendezvous import RendezvousState
    kwargs = {}
    if args.zone:
        kwargs["zone"] = args.zone
    if args.dns_port is not None:
        kwargs["dns_port"] = args.dns_port
    directory_only = [o for o, v in (("--tsig-key", args.tsig_key),
                                     ("--transfer-key", args.transfer_key)) if v]
    if not args.directory and directory_only:
        raise CliError(f"rendezvous init: {directory_only[0]} needs --directory dns://HOST[:PORT]")
    if args.directory and not (args.tsig_key and args.zone):
        raise CliError("rendezvous init: --directory needs --tsig-key FILE and --zone ZONE")
    if not args.directory and not args.network:
        raise CliError("rendezvous init: --network CIDR is required (without --directory)")
    try:
        if args.directory:
            from discovery.stores.zone_rendezvous import init_on_directory
            st = init_on_directory(args.state, args.endpoint, args.zone, args.directory,
                                   args.tsig_key, network=args.network,
                                   transfer_key=args.transfer_key, listen_port=args.listen_port,
                                   interface=args.interface or "meshwg-rdv",
                                   dns_port=kwargs.get("dns_port", 53))
        else:
            st = RendezvousState.init(args.state, args.network, args.endpoint,
                                      listen_port=args.listen_port,
                                      interface=args.interface or "meshwg-rdv", **kwargs)
    except MeshwgError as exc:
        raise CliError(f"rendezvous init: {exc}") from None
    info = {"state": str(args.state), "network": st.network, "address": st.address,
            "endpoint": st.endpoint, "zone": st.zone, "interface": st.interface,
            "listen_port": st.listen_port, "public_key": encode_key(st.public_key), "mesh_id": st.mesh_id,
            "directory": st.directory or None}
    st.close()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"rendezvous created in {args.state}: mesh {info['network']}, its address {info['address']}, "
              f"public endpoint {info['endpoint']}, zone {info['zone']}\n"
              f"next: meshwg rendezvous run --state {args.state}    then: meshwg invite --state {args.state}")
    return 0


def cmd_rendezvous_run(args) -> int:
    from discovery.daemons.rendezvous import RendezvousDaemon
    check_privileges()
    try:
        daemon = RendezvousDaemon(args.state, interval=args.interval, public_dns=args.public_dns,
                                  interface=args.interface, relay=not args.no_relay,
                                  relay_tcp_port=args.relay_tcp_port)
    except MeshwgError as exc:
        raise CliError(f"rendezvous run: {exc}") from None
    return _run_in_foreground(daemon, daemon.interface, lambda: (
        f"meshwg: rendezvous {daemon.interface} running (mesh {daemon.network}, "
        f"DNS-SD on {daemon.state.address}:{daemon.state.dns_port})"))


def cmd_rendezvous_status(args) -> int:
    """The running rendezvous's status file (discovery.daemons.rendezvous_status)."""
    from discovery.daemons.rendezvous_status import format_status, status_path
    from meshwg.util.files import process_running
    path = status_path(args.state)
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise CliError(f"rendezvous status: no running `meshwg rendezvous run --state "
                       f"{args.state}` (no {path})") from None
    except (OSError, ValueError) as exc:
        raise CliError(f"rendezvous status: {path}: {exc}") from None
    pid = doc.get("pid")
    doc["running"] = isinstance(pid, int) and process_running(pid)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(format_status(doc)))
    return 0


def _run_in_foreground(daemon, interface: str, banner) -> int:
    """Start a daemon, record its pid for `meshwg down`, run until SIGINT/SIGTERM, stop it."""
    run_in_foreground(daemon, lambda: interface, banner, StopSignal())
    return 0


def cmd_invite(args) -> int:
    from discovery.stores.rendezvous import RendezvousState
    from discovery.enroll.tokens import encode_token
    from dataclasses import replace
    from discovery.relay import tls
    expires = parse_duration(args.expires) if args.expires else None
    try:
        with RendezvousState.open(args.state) as st:
            if st.directory:        # the invite goes into the zone (discovery.stores.zone_rendezvous)
                from discovery.stores import zone_rendezvous as zr
                invite, listed = zr.on_primary(zr.access(st), lambda store: (store.create_invite(
                    reusable=args.reusable, expires_in=expires), store.rendezvous()))
                token = zr.invite_token(st, invite, rendezvous=listed)
            else:
                token = st.create_invite(reusable=args.reusable, expires_in=expires)
        relay_port = tls.saved_port(args.state)
        if relay_port:          # the relay over TLS on TCP, pinned: for networks that block UDP
            token = replace(token, relay_tcp_port=relay_port,
                            relay_pin=tls.ensure_identity(args.state).pin)
    except MeshwgError as exc:
        raise CliError(f"invite: {exc}") from None
    text = encode_token(token)
    if args.json:
        print(json.dumps({"token": text, "invite_id": token.invite_id, "reusable": args.reusable,
                          "expires_at": token.expires_at}))
    else:
        print(text)
    return 0


def cmd_invites(args) -> int:
    """`meshwg invites [--json]` lists the invites; `meshwg invites revoke ID` withdraws one."""
    from discovery.stores.rendezvous import RendezvousState
    try:
        with RendezvousState.open(args.state) as st:
            store = st
            if st.directory:        # the invites are the zone's (discovery.stores.zone_rendezvous)
                from discovery.stores import zone_rendezvous as zr
                zone = zr.access(st)
                if args.action == "revoke":
                    store = zr.on_primary(zone, lambda primary: primary)
                else:
                    store, _ = zr.on_any(zone, lambda readable: readable)
            if args.action == "revoke":
                if not args.invite_id:
                    raise CliError("invites revoke: give the invite id (or its first 8+ hex "
                                   "digits) that `meshwg invites` lists")
                inv = store.revoke_invite(args.invite_id)
                print(f"revoked invite {inv.invite_id}: its token enrolls no one from now on "
                      f"(members it enrolled stay; `meshwg remove NAME` removes them)")
                return 0
            now = time.time()
            rows = [{"invite_id": i.invite_id, "reusable": i.reusable, "uses": i.uses,
                     "created_at": i.created_at, "expires_at": i.expires_at,
                     "usable": i.refusal(now) is None, "members": store.invite_members(i.invite_id)}
                    for i in store.invites()]
    except MeshwgError as exc:
        raise CliError(f"invites: {exc}") from None
    if args.json:
        print(json.dumps({"invites": rows}, indent=2))
        return 0
    print(f"{'ID':34} {'KIND':9} {'USES':>4} {'EXPIRES':17} {'STATE':8} MEMBERS")
    for r in rows:
        expires = "never" if r["expires_at"] is None else \
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r["expires_at"]))
        kind = "reusable" if r["reusable"] else "single"
        print(f"{r['invite_id']:34} {kind:9} {r['uses']:>4} {expires:17} "
              f"{'usable' if r['usable'] else 'spent':8} {', '.join(r['members']) or '-'}")
    return 0


def cmd_members(args) -> int:
    from discovery.stores.rendezvous import RendezvousState
    from discovery.stores.validate import candidate_problems
    directory = None
    try:
        with RendezvousState.open(args.state) as st:
            if st.directory:        # the membership is the zone's (discovery.stores.zone_rendezvous)
                directory = _zone_members(st)
                members = directory.pop("members")
            else:
                members = st.members()
            me = {"name": "(rendezvous)", "address": st.address, "public_key": encode_key(st.public_key)}
    except MeshwgError as exc:
        raise CliError(f"members: {exc}") from None
    rows = [{"name": m.name, "mesh_address": m.mesh_address, "public_key": encode_key(m.public_key),
             "joined_at": m.joined_at, "last_seen": m.last_seen,
             "host_candidates": m.host_candidates,
             "unpublishable": candidate_problems(m.host_candidates)} for m in members]
    relay = _relay_status(args.state)
    if args.json:
        print(json.dumps({"rendezvous": me, "members": rows, "relay": relay,
                          **({"directory": directory} if directory else {})}, indent=2))
        return 0
    print("\n".join(members_text(me, rows, directory)))
    return 0


def members_text(me: dict, rows: list[dict], directory: dict | None) -> list[str]:
    """`meshwg members`'s lines: the directory line (a DNS directory), the header, this
    rendezvous, the mesh's other rendezvous (a DNS directory), then the members."""
    lines = []
    if directory:
        lines.append(f"directory: zone {directory['zone']} read from {directory['read_from']}; "
                     f"{directory['primary'] or 'primary writable'}")
    lines.append(f"{'NAME':20} {'ADDRESS':16} {'PUBLIC KEY':45} JOINED")
    lines.append(f"{me['name']:20} {me['address']:16} {me['public_key']:45} -" +
                 ("  (this one)" if directory else ""))
    for r in (directory or {}).get("rendezvous", []):
        if not r["self"]:
            lines.append(f"{'(rendezvous)':20} {r['address']:16} {r['public_key']:45} -  "
                         f"(endpoint {r['endpoint']})")
    for r in rows:
        joined = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["joined_at"]))
        lines.append(f"{r['name']:20} {r['mesh_address']:16} {r['public_key']:45} {joined}")
        for reason in r["unpublishable"]:   # stored before candidates were checked
            lines.append(f"  not published: {reason}")
    return lines


def _zone_members(st) -> dict:
    """The members and rendezvous of a rendezvous on a DNS directory, read from the first
    server that answers, and whether the primary is writable."""
    from discovery.stores import zone_rendezvous as zr
    zone = zr.access(st)
    (members, rendezvous), server = zr.on_any(zone, lambda store: (
        store.members(), zr.rendezvous_rows(store, st.public_key)))
    return {"zone": st.zone, "servers": zone.servers, "read_from": server,
            "primary": zr.writable(zone), "rendezvous": rendezvous, "members": members}


def _relay_status(state_dir: str) -> dict | None:
    """The running rendezvous's relay counters (discovery.daemons.rendezvous.RELAY_STATUS);
    None when it runs no relay or is not running."""
    from discovery.daemons.rendezvous import RELAY_STATUS
    try:
        with open(os.path.join(state_dir, RELAY_STATUS)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def cmd_remove(args) -> int:
    from discovery.stores.rendezvous import RendezvousState
    try:
        with RendezvousState.open(args.state) as st:
            if st.directory:        # revocation is written to the zone's primary
                from discovery.stores import zone_rendezvous as zr
                m = zr.on_primary(zr.access(st), lambda store: store.remove_member(
                    args.member, revoke_invite=args.revoke_invite))
            else:
                m = st.remove_member(args.member, revoke_invite=args.revoke_invite)
    except MeshwgError as exc:
        raise CliError(f"remove: {exc}") from None
    print(f"removed {m.name} ({m.mesh_address}); a running rendezvous drops it from every member "
          f"within one update interval")
    if args.revoke_invite:
        print(f"revoked the invite it enrolled with ({m.invite_id})" if m.invite_id else
              f"{m.name} was not enrolled with a recorded invite: no invite revoked")
    return 0


# ---------------------------------------------------------------- join / status
def cmd_join(args) -> int:
    from discovery.daemons.member import MemberDaemon
    state_file = os.path.join(args.state, "member.json")
    check_privileges()          # before enrolling: a single-use token is not wasted
    args.token = _join_token(args, resuming=os.path.exists(state_file))
    if args.token:
        if os.path.exists(state_file):
            from discovery.daemons.removal import load_removed, removed_line
            removed = load_removed(args.state)
            if removed is not None:
                raise CliError(f"join: the membership in {args.state} was {removed_line(removed)}; "
                               f"join with this token and a fresh --state directory")
            raise CliError(f"join: {args.state} already holds a membership; run `meshwg join --state "
                           f"{args.state}` without a token to resume, or use another --state")
        try:
            _enroll(args)
        except OSError as exc:      # member.json: the key is saved, the token accepts it again
            raise CliError(f"join: enrolled, but cannot save the membership in {args.state}: "
                           f"{exc.strerror or exc}; free space and run the same command again "
                           f"(this machine's key is kept and the same token admits it again)") from None
        except CliError:
            raise
        except MeshwgError as exc:
            raise CliError(f"join: {exc}") from None
    elif not os.path.exists(state_file):
        raise CliError(f"join: no membership in {args.state}: give the token from `meshwg invite`")
    else:
        from discovery.daemons.removal import load_removed, removed_line
        removed = load_removed(args.state)
        if removed is not None:
            raise CliError(f"join: this machine was {removed_line(removed)}; to join again, get a "
                           f"new token from `meshwg invite` and run `meshwg join TOKEN --state "
                           f"NEW_DIR` with a fresh state directory")
    try:
        daemon = MemberDaemon(args.state, interface=args.interface, listen_port=args.listen_port,
                              interval=args.interval, mdns=not args.no_mdns,
                              portmap=not args.no_portmap, netcheck=not args.no_netcheck,
                              relay_port=(args.relay_port or 0) if args.relay or args.relay_port else None,
                              dns=args.dns)
    except MeshwgError as exc:
        raise CliError(f"join: {exc}") from None
    st = daemon.state
    return _run_in_foreground(daemon, args.interface, lambda: (
        f"meshwg: {st.name} joined the mesh as {st.address} on {args.interface}"))


def _join_token(args, resuming: bool) -> str | None:
    """The join token from the argument, --token-file (FILE, or - for standard input) or
    the MESHWG_TOKEN environment variable (ignored when resuming); None for none. An
    argument is visible to every local user in `ps`; a file, a pipe or the environment
    is not."""
    given = [how for how, value in (("the TOKEN argument", args.token),
                                    ("--token-file", args.token_file)) if value]
    if len(given) > 1:
        raise CliError("join: give the token once: as TOKEN or with --token-file, not both")
    if args.token_file:
        try:
            if args.token_file == "-":
                text = sys.stdin.read(MAX_TOKEN_TEXT + 1)
            else:
                with open(args.token_file, encoding="utf-8") as f:
                    text = f.read(MAX_TOKEN_TEXT + 1)
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"join: cannot read the token from {args.token_file}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
        if len(text) > MAX_TOKEN_TEXT:
            raise CliError(f"join: {args.token_file} holds more than {MAX_TOKEN_TEXT} characters: "
                           f"not a token")
        if not text.strip():
            raise CliError(f"join: {args.token_file} holds no token")
        return text.strip()
    if args.token:
        return args.token
    env = os.environ.get("MESHWG_TOKEN", "").strip()
    return env if env and not resuming else None


def _enroll(args) -> None:
    import socket
    from meshwg.core.crypto import public_key
    from discovery.enroll.messages import EnrollmentError, EnrollmentRefused
    from discovery.enroll.transport import enroll_any
    from discovery.lan.interfaces import lan_addresses
    from discovery.stores.member import MemberState, enrollment_key, merge_rendezvous
    from discovery.enroll.tokens import TokenError, decode_token
    try:
        token = decode_token(args.token)
    except TokenError as exc:
        raise CliError(f"join: invalid token: {exc}") from None
    name = args.name or re.sub(r"[^a-z0-9-]", "-", socket.gethostname().lower()).strip("-")[:63] or "member"
    private = enrollment_key(args.state)        # made here, saved before the request; never sent
    port = args.listen_port or 0
    candidates = [format_endpoint((ip, port))
                  for ip, _, _ in lan_addresses(exclude=(args.interface,))] if port else []
    try:
        result = enroll_any(token, public_key(private), name, candidates, on_attempt=lambda where, exc: print(
            f"meshwg: rendezvous {where} did not enroll us ({exc}); trying the next", file=sys.stderr))
    except EnrollmentRefused as exc:
        from discovery.stores.invites import REFUSAL_NAME_TAKEN
        hint = ("; a name is unique in a mesh (it is NAME.ZONE in DNS): choose another with "
                "--name" if exc.reason == REFUSAL_NAME_TAKEN else "")
        raise CliError(f"join refused by the rendezvous: {exc}{hint}") from None
    except EnrollmentError as exc:
        raise CliError(f"join: {exc}") from None
    except ValueError as exc:
        raise CliError(f"join: {exc}") from None
    from dataclasses import replace
    at = next(ref for ref in token.rendezvous if ref.public_key == result.rendezvous_public_key)
    replace(MemberState.from_enrollment(private, name, result), relay_tcp_port=at.relay_tcp_port,
            relay_pin=at.pin.hex(), other_rendezvous=merge_rendezvous(
                at.public_key, token.rendezvous, result.rendezvous)).save(args.state)
    print(f"meshwg: enrolled as {name} with mesh address {result.address}", file=sys.stderr, flush=True)


def cmd_status(args) -> int:
    from discovery.daemons.member_status import status_path
    from meshwg.util.files import RUN_DIRECTORY, process_running, read_pid_file
    from meshwg.cli.show import peer_summary
    from meshwg.uapi import client as uapi_client
    names = [args.interface] if args.interface else sorted(
        n[:-12] for n in _listdir(RUN_DIRECTORY) if n.endswith(".status.json"))
    if not names:
        raise CliError("status: no running `meshwg join` found (give --interface NAME)")
    docs = []
    for name in names:
        try:
            with open(status_path(name)) as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise CliError(f"status: {name} is not a running mesh member (no {status_path(name)})") from None
        for p in doc["peers"]:      # the daemon's file holds no counters: read them live
            p.setdefault("endpoint", None)
            p.update(rx_bytes=0, tx_bytes=0, latest_handshake=None)
        pid = read_pid_file(name)   # a member killed with -9 leaves its files behind
        doc.update(running=pid is not None and process_running(pid), pid=pid)
        if not doc["running"]:
            docs.append(doc)
            continue
        try:
            live = {s["public_key"]: s for s in map(peer_summary, uapi_client.get(name).peers)}
            for p in doc["peers"]:
                if p["public_key"] in live:
                    lp = live[p["public_key"]]
                    p.update(endpoint=lp["endpoint"], rx_bytes=lp["rx_bytes"], tx_bytes=lp["tx_bytes"],
                             latest_handshake=lp["latest_handshake"])
            for r in doc.get("rendezvous", []):     # the tunnel to each rendezvous kept
                r["latest_handshake"] = live.get(r["public_key"], {}).get("latest_handshake")
        except uapi_client.ControlError:
            pass
        docs.append(doc)
    if args.json:
        print(json.dumps(docs[0] if args.interface else docs, indent=2))
        return 0
    now = time.time()
    for doc in docs:
        me = doc["self"]
        print(f"{doc['interface']}: {me['name']} {me['mesh_address']} (port {me['listen_port']}, "
              f"mesh {me['network']})")
        if doc.get("removed"):
            from discovery.daemons.removal import removed_line
            print(f"  REMOVED: {removed_line(doc['removed'])}; nothing more is attempted. "
                  f"`meshwg down {doc['interface']}`, then join again with a new token and a fresh --state")
        if doc.get("dns"):
            print(f"  names: {_dns_note(doc['dns'])}")
        if not doc["running"]:
            gone = f"process {doc['pid']} is gone" if doc["pid"] else "no pid file"
            print(f"  NOT RUNNING: {gone} (killed?); its last status is from "
                  f"{int(now - doc.get('updated_at', now))}s ago. `meshwg join` starts it again")
            continue
        if doc.get("rendezvous"):      # each rendezvous, where the directory is read, whether it answers
            for r in doc["rendezvous"]:
                print(f"  {_rendezvous_note(r, now)}")
        width = max([10] + [len(p["path"]) for p in doc["peers"]])
        print(f"  {'NAME':14} {'ADDRESS':15} {'PATH':{width}} {'ENDPOINT':24} {'HANDSHAKE':10} {'RX':>10} {'TX':>10}  REASON")
        for p in doc["peers"]:
            hs = f"{int(now - p['latest_handshake'])}s ago" if p.get("latest_handshake") else "never"
            print(f"  {p['name'][:14]:14} {p['mesh_address']:15} {p['path']:{width}} {str(p.get('endpoint') or '-'):24} "
                  f"{hs:10} {p['rx_bytes']:>10} {p['tx_bytes']:>10}  {_path_note(p)}")
    return 0


def _rendezvous_note(r: dict, now: float) -> str:
    """One rendezvous of a member's mesh (discovery.traversal.rendezvous_choice's status)."""
    role = "directory read here" if r["current"] else "tunnel kept" if r["tunnel"] else "known"
    answers = ("answers" if r["answers"] else
               f"NOT ANSWERING: {r['error']}" if r.get("error") else "not asked yet")
    hs = f", handshake {int(now - r['latest_handshake'])}s ago" if r.get("latest_handshake") else ""
    return f"rendezvous {r['endpoint']} ({r['mesh_address']}): {role}, {answers}{hs}"


def _dns_note(dns: dict) -> str:
    """How NAME.ZONE resolves on this host (discovery.daemons.host_dns's status)."""
    mode = dns.get("mode")
    if mode == "hosts":
        note = f"hosts ({dns.get('hosts_file')}: {dns.get('names', 0)} names"
        left_out = dns.get("short_names_left_out") or {}
        if left_out:
            note += "; short names left out: " + ", ".join(
                f"{name} ({why})" for name, why in sorted(left_out.items()))
        note += ")"
    elif mode == "resolved":
        note = f"resolved ({', '.join(dns.get('servers', []))} for {dns.get('domain')}" + \
               (", searched: short names" if dns.get("search") else "") + ")"
    else:
        note = str(mode)
    if dns.get("requested") == "auto":
        note += ", chosen by --dns auto"
    return note + (f"; error: {dns['error']}" if dns.get("error") else "")


def _path_note(peer: dict) -> str:
    """The REASON column: why a pair is not direct (none: no path; relay: "relay via NAME:
    why", with the bytes relayed)."""
    if peer["path"] == "none":
        return peer["reason"]
    if peer["path"] == "relay":
        return (f"{peer['reason']} (relayed rx {peer.get('relay_rx_bytes', 0)} B, "
                f"tx {peer.get('relay_tx_bytes', 0)} B)")
    return ""


def cmd_lab(args) -> int:
    try:
        from discovery.lab import demo as lab
    except ImportError as exc:
        raise CliError(f"lab: not available ({exc})") from None
    return lab.main(args.lab_args)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


# ---------------------------------------------------------------- registration
def register(sub) -> None:
    p = sub.add_parser("rendezvous", help="create or run the rendezvous (directory) node of a mesh")
    rsub = p.add_subparsers(dest="rendezvous_command", metavar="ACTION")
    rsub.required = True
    q = rsub.add_parser("init", help="create a rendezvous: keys, mesh address range, public endpoint",
                        description="Create a rendezvous in a state directory. It takes the first address "
                                    "of the mesh range; members reach it at ENDPOINT (UDP for WireGuard, "
                                    "TCP on the same port for enrollment).")
    q.add_argument("--state", required=True, help="state directory (created, mode 0700)")
    q.add_argument("--network", help="mesh address range, e.g. 100.96.0.0/24 (required without "
                                      "--directory; a second rendezvous on a directory reads it "
                                      "from the zone)")
    q.add_argument("--endpoint", required=True, help="public HOST:PORT members reach the rendezvous at")
    q.add_argument("--zone", help="DNS-SD zone (default mesh.internal.)")
    q.add_argument("--listen-port", type=int, help="UDP listen port (default: the endpoint's port)")
    q.add_argument("--interface", help="interface name (default meshwg-rdv)")
    q.add_argument("--dns-port", type=int, help="DNS-SD port on the mesh address (default 53)")
    q.add_argument("--directory", metavar="dns://HOST[:PORT]",
                   help="keep the membership in ZONE on this authoritative DNS server (RFC 2136 "
                        "updates); a comma-separated list names the primary first, then servers "
                        "the zone is also read from (secondaries). Default: embedded")
    q.add_argument("--tsig-key", metavar="FILE",
                   help="with --directory: the tsig-keygen file of the key that signs updates "
                        "(copied into the state directory, 0600)")
    q.add_argument("--transfer-key", metavar="FILE",
                   help="with --directory: the key that signs zone reads (AXFR, SOA) when the "
                        "server allows transfers to another key than updates (configs/dns: "
                        "meshwg-transfer); default: the --tsig-key key")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_rendezvous_init)
    q = rsub.add_parser("run", help="run the rendezvous in the foreground until SIGINT/SIGTERM")
    q.add_argument("--state", required=True)
    q.add_argument("--interval", type=float, default=1.0,
                   help="seconds between looks for membership changes made by other commands, "
                        "e.g. `meshwg remove` (default 1)")
    q.add_argument("--interface", help="override the interface name saved at init")
    q.add_argument("--public-dns", metavar="HOST:PORT",
                   help="also serve DNS-SD on a public address (wgsd-client compatibility; "
                        "leaks every member's endpoint to anyone who asks)")
    q.add_argument("--relay-tcp-port", type=int, default=443, metavar="PORT",
                   help="also relay over TLS on this TCP port, for members whose network blocks "
                        "UDP (default 443; 0: off); later invites carry its certificate's pin")
    q.add_argument("--no-relay", action="store_true",
                   help="do not relay members' WireGuard datagrams (UDP on the WireGuard port + 1) "
                        "for pairs without a direct path")
    q.set_defaults(func=cmd_rendezvous_run)
    q = rsub.add_parser("status", help="what a running rendezvous serves and its directory's health",
                        description="Reads the status the running `meshwg rendezvous run` keeps in "
                                    "its state directory: interface, mesh, zone, members, and for a "
                                    "DNS directory the servers, the one read last and why the "
                                    "primary (enrollment, invites, revocation) or every server "
                                    "does not answer.")
    q.add_argument("--state", required=True)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_rendezvous_status)

    p = sub.add_parser("invite", help="print a join token")
    p.add_argument("--state", required=True, help="the rendezvous's state directory")
    p.add_argument("--reusable", action="store_true", help="token may enroll several machines")
    p.add_argument("--expires", metavar="DURATION", help="e.g. 30m, 12h, 7d (default: never)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_invite)

    p = sub.add_parser("invites", help="list the invites of a rendezvous, or revoke one",
                       description="`meshwg invites --state DIR` lists every invite (id, single-use "
                                   "or reusable, uses, expiry, the members it enrolled); `meshwg "
                                   "invites revoke ID --state DIR` withdraws one (ID: the id or its "
                                   "first 8+ hex digits).")
    p.add_argument("action", nargs="?", choices=("list", "revoke"), default="list")
    p.add_argument("invite_id", nargs="?", metavar="ID")
    p.add_argument("--state", required=True, help="the rendezvous's state directory")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_invites)

    p = sub.add_parser("members", help="list the members of a rendezvous")
    p.add_argument("--state", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_members)

    p = sub.add_parser("remove", help="revoke a member (name, mesh address or public key)")
    p.add_argument("--state", required=True)
    p.add_argument("member")
    p.add_argument("--revoke-invite", action="store_true",
                   help="also revoke the invite the member enrolled with, so a leaked reusable "
                        "token cannot enroll it (or anyone) again")
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser("join", help="enroll with a token, then run this node as a mesh member",
                       description="First run: `meshwg join TOKEN --state DIR` generates this machine's "
                                   "key pair locally, enrolls with the rendezvous and runs the member in "
                                   "the foreground. Later runs: `meshwg join --state DIR` resumes.")
    p.add_argument("token", nargs="?",
                   help="join token from `meshwg invite` (first run only). Every local user can "
                        "read a command's arguments (ps, /proc): prefer --token-file or "
                        "MESHWG_TOKEN on a shared machine")
    p.add_argument("--token-file", metavar="FILE",
                   help="read the join token from FILE (- for standard input) instead of the "
                        "command line; the environment variable MESHWG_TOKEN works too")
    p.add_argument("--state", required=True, help="state directory (created, mode 0700)")
    p.add_argument("--interface", default="meshwg0", help="interface name (default meshwg0)")
    p.add_argument("--listen-port", type=int, default=0, help="UDP port (default: chosen by the kernel)")
    p.add_argument("--name", help="member name (default: the host name)")
    p.add_argument("--interval", type=float, default=1.0,
                   help="least seconds between two directory reads (default 1); the directory is "
                        "read when the rendezvous announces a change or its serial moved (checked "
                        "every 15 s)")
    p.add_argument("--no-mdns", action="store_true", help="do not publish or browse on the LAN")
    p.add_argument("--no-portmap", action="store_true",
                   help="do not ask the home gateway for a port mapping (PCP, NAT-PMP, UPnP)")
    p.add_argument("--no-netcheck", action="store_true",
                   help="do not run netcheck by itself (at start without a recent report, after "
                        "address changes, every 30 min): only `meshwg netcheck --state` tells it "
                        "its NAT kind, which hard-NAT traversal needs")
    p.add_argument("--relay", action="store_true",
                   help="offer to relay the other members' WireGuard datagrams (members only, "
                        "UDP on the listen port + 1): for a member with a public address; "
                        "published in the directory")
    p.add_argument("--relay-port", type=int, metavar="PORT",
                   help="the relay's UDP port (implies --relay; default: the listen port + 1)")
    p.add_argument("--dns", choices=("auto", "resolved", "hosts", "off"), default="auto",
                   help="make members' names resolvable here, NAME.ZONE and the short NAME "
                        "(`ping laptop`): resolved (systemd-resolved's DNS on the interface, "
                        "ZONE its search and routing domain), hosts (a managed block in "
                        "/etc/hosts, 'ADDRESS NAME.ZONE NAME'; a short NAME the host already "
                        "resolves, from another line or as its own host name, is left out and "
                        "`meshwg status` says so), off; auto (default): resolved when it runs, "
                        "else hosts")
    p.set_defaults(func=cmd_join)

    p = sub.add_parser("status", help="one row per peer: name, address, path, endpoint, handshake, rx/tx")
    p.add_argument("--interface", help="member interface (default: every running member)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    from discovery.netcheck.command import register as register_netcheck
    register_netcheck(sub)

    p = sub.add_parser("lab", help="build a NAT lab in network namespaces and run a mesh in it",
                       description="Builds a fake internet, a rendezvous and members behind real Linux "
                                   "NATs (cone, symmetric, double, hairpinning or not, UDP blocked, ...) "
                                   "in network namespaces, runs the real daemons, shows the connectivity "
                                   "matrix (each pairing's path and time to first packet; `-- --json`), "
                                   "and cleans up. `-- --mesh`: the four-member mesh proof instead.")
    p.add_argument("lab_args", nargs="*", help="options passed to the lab (see `meshwg lab -- --help`)")
    p.set_defaults(func=cmd_lab)

"""The member daemon behind `meshwg join`: a meshwg engine plus discovery.

- keeps a tunnel with persistent keepalive to the rendezvous;
- resolves the directory (DNS-SD over the tunnel) every interval and when told of a change;
- follows members of its mesh on the LAN with mDNS, also while the rendezvous is down;
- adds, updates and removes peers on its own engine through the control socket (`wg`'s);
- probes candidate endpoints (discovery.paths) and prefers LAN paths;
- re-announces at once when its own addresses change (netlink);
- writes a status file for `meshwg status`.

Only members listed by the rendezvous become peers: mDNS is unauthenticated, so it only
ever contributes candidate endpoints for peers we already trust, and a forged answer can at
worst cost a handshake initiation.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time

from meshwg.uapi import client as uapi_client
from meshwg.conn.udp import format_endpoint
from meshwg.device.device import Device

from discovery.dnssd.client import DiscoveryError, resolve_zone
from discovery.lan.mdns import MdnsAnnouncer, MdnsBrowser, MdnsService
from discovery.lan.netwatch import AddressWatcher, lan_addresses
from discovery.dnssd.notify import NotifyListener
from discovery.traversal.paths import Candidates, PathManager
from discovery.dnssd.records import MemberRecord
from discovery.traversal.report import REPORT_PORT_DEFAULT, ReportError, send_report
from discovery.stores.rendezvous import MemberState
from discovery.enroll.tokens import parse_endpoint

log = logging.getLogger("meshwg.member")

STATUS_DIRECTORY = "/var/run/meshwg"
DEFAULT_INTERVAL = 1.0
RENDEZVOUS_KEEPALIVE = 5
MEMBER_KEEPALIVE = 10
DIRECTORY_CACHE = "directory.json"


def status_path(interface: str) -> str:
    return os.path.join(STATUS_DIRECTORY, f"{interface}.status.json")


def _host_prefix(address: str) -> str:
    return f"{address}/{128 if ':' in address else 32}"


def _resolve_host(endpoint: str) -> tuple[str, int]:
    import socket
    host, port = parse_endpoint(endpoint)
    try:
        ipaddress.ip_address(host)
        return host, port
    except ValueError:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        return info[0][4][0], port


class MemberDaemon:
    def __init__(self, state_dir: str, interface: str = "meshwg0", listen_port: int = 0,
                 interval: float = DEFAULT_INTERVAL, mdns: bool = True):
        self.state_dir = state_dir
        self.state = MemberState.load(state_dir)
        self.interface = interface
        self.listen_port = listen_port
        self.interval = interval
        self.use_mdns = mdns
        self.network = ipaddress.ip_network(self.state.network)
        self.rendezvous_key = self.state.rendezvous_public_key
        self.rendezvous_endpoint = _resolve_host(self.state.rendezvous_endpoint)
        self.paths = PathManager()
        self.device: Device | None = None
        self.mdns_service: MdnsService | None = None
        self.announcer: MdnsAnnouncer | None = None
        self.browser: MdnsBrowser | None = None
        self.watcher: AddressWatcher | None = None
        self.directory: dict[bytes, MemberRecord] = self._load_directory_cache()
        self.directory_ok: float | None = None
        self.directory_error: str | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._addresses_changed = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported: list[str] | None = None
        self._resolve_now = threading.Event()
        self.notify_listener: NotifyListener | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        st = self.state
        self.device = Device(self.interface, private_key=st.private_key, listen_port=self.listen_port,
                             addresses=[f"{st.address}/{self.network.prefixlen}"], manage_routes=False)
        self.device.start()
        try:
            uapi_client.set_(self.interface, [
                f"public_key={self.rendezvous_key.hex()}",
                f"endpoint={format_endpoint(self.rendezvous_endpoint)}",
                "replace_allowed_ips=true",
                f"allowed_ip={_host_prefix(st.dns_address)}",
                f"persistent_keepalive_interval={RENDEZVOUS_KEEPALIVE}",
            ])
            self._refresh_local_networks()
            if self.use_mdns:
                self._start_mdns()
            self.watcher = AddressWatcher(self._on_address_change).start()
            self.notify_listener = NotifyListener(st.address, st.zone, st.dns_address,
                                                  self._on_directory_notify).start()
            self._apply_directory(now=time.time())   # cached directory: links before the rendezvous answers
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(target=self._loop, name="member-loop", daemon=True)
        self._thread.start()
        log.info("member %s (%s) on %s, port %d", st.name, st.address, self.interface,
                 self.device.listen_port)

    def _start_mdns(self) -> None:
        try:
            self.mdns_service = MdnsService(exclude_interfaces=(self.interface,))
            self.announcer = MdnsAnnouncer(self.state.mesh_id, self.state.public_key, self.state.name,
                                           self.state.address, self.device.listen_port,
                                           service=self.mdns_service)
            self.announcer.start()
            self.browser = MdnsBrowser(self.state.mesh_id, self.state.public_key,
                                       on_change=lambda peers: self._wake.set(),
                                       service=self.mdns_service)
            self.browser.start()
        except Exception as exc:   # no multicast-capable interface, etc.: keep going without LAN discovery
            log.warning("mDNS unavailable (%s); LAN discovery disabled", exc)
            self.announcer = self.browser = None

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for part in (self.notify_listener, self.watcher, self.browser, self.announcer):
            if part is not None:
                try:
                    part.stop()
                except Exception:
                    log.exception("stopping %s", part)
        if self.device is not None:
            self.device.stop()
            self.device = None
        try:
            os.unlink(status_path(self.interface))
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------------ events
    def _on_directory_notify(self) -> None:
        self._resolve_now.set()
        self._wake.set()

    def _on_address_change(self) -> None:
        self._addresses_changed.set()
        self._wake.set()

    def _refresh_local_networks(self) -> list[tuple[str, object, str]]:
        addrs = lan_addresses(exclude=(self.interface,))
        self.paths.set_local_networks([net for _, net, _ in addrs])
        return addrs

    def host_candidates(self) -> list[str]:
        port = self.device.listen_port
        return [format_endpoint((ip, port)) for ip, _, _ in self._refresh_local_networks()]

    # ------------------------------------------------------------------ main loop
    def _loop(self) -> None:
        next_resolve = 0.0
        while not self._stopping.is_set():
            now = time.time()
            try:
                if self._addresses_changed.is_set():
                    self._addresses_changed.clear()
                    self._handle_own_address_change()
                if now >= next_resolve or self._resolve_now.is_set():
                    self._resolve_now.clear()
                    self._report_candidates()
                    self._resolve_directory()
                    # a large directory (10,000 members take ~0.5 s) is not re-read back to back
                    next_resolve = now + max(self.interval, 3 * (time.time() - now))
                self._apply_directory(now)
                self._probe(now)
                self._write_status(now)
            except uapi_client.ControlError as exc:
                log.warning("control socket: %s", exc)
            except Exception:
                log.exception("member loop iteration failed")
            self._wake.wait(min(self.interval, 0.5))
            self._wake.clear()

    def _handle_own_address_change(self) -> None:
        log.info("own addresses changed: re-announcing")
        if self.announcer is not None:
            try:
                self.announcer.update_addresses()
            except Exception:
                log.exception("mDNS re-announce failed")
        self._reported = None      # report new host candidates to the rendezvous now
        # let every peer (and the rendezvous) see our new source address at once
        lines = [f"public_key={self.rendezvous_key.hex()}",
                 f"probe_endpoint={format_endpoint(self.rendezvous_endpoint)}"]
        now = time.time()
        for key, path in self.paths.peers.items():
            if path.endpoint is not None:
                lines += [f"public_key={key.hex()}", "update_only=true",
                          f"probe_endpoint={format_endpoint(path.endpoint)}"]
            self.paths.path_may_have_moved(key, now)
        uapi_client.set_(self.interface, lines)

    def _report_candidates(self) -> None:
        candidates = self.host_candidates()
        if candidates == self._reported:
            return
        try:
            send_report(self.state.dns_address, REPORT_PORT_DEFAULT, candidates, timeout=2.0)
            self._reported = candidates
        except ReportError as exc:
            log.debug("%s", exc)

    def _resolve_directory(self) -> None:
        try:
            records = resolve_zone((self.state.dns_address, self.state.dns_port), self.state.zone,
                                   timeout=1.0)
        except (DiscoveryError, OSError) as exc:
            self.directory_error = str(exc)
            return
        self.directory_error = None
        self.directory_ok = time.time()
        own = self.state.public_key
        fresh = {r.public_key: r for r in records if r.public_key != own}
        if set(fresh) != set(self.directory) or any(
                fresh[k].endpoint != self.directory[k].endpoint for k in fresh):
            self._save_directory_cache(fresh)
        self.directory = fresh

    def _lan_peers(self) -> dict:
        return self.browser.peers() if self.browser is not None else {}

    def _apply_directory(self, now: float) -> None:
        """Make the engine's peers equal to the directory; feed the path manager."""
        lan = self._lan_peers()
        dev = uapi_client.parse_get(uapi_client.get(self.interface))
        have = {bytes.fromhex(p["public_key"]): p for p in dev["peers"]}
        lines: list[str] = []
        for key in list(have):
            if key != self.rendezvous_key and key not in self.directory:
                lines += [f"public_key={key.hex()}", "remove=true"]
                self.paths.forget(key)
        for key, rec in self.directory.items():
            allowed = _host_prefix(rec.mesh_address) if rec.mesh_address else None
            peer = have.get(key)
            if peer is None or (allowed and peer["allowed_ips"] != [allowed]):
                lines += [f"public_key={key.hex()}", f"persistent_keepalive_interval={MEMBER_KEEPALIVE}",
                          "replace_allowed_ips=true"] + ([f"allowed_ip={allowed}"] if allowed else [])
            lan_peer = lan.get(key)
            lan_eps = []
            if lan_peer is not None:
                for addr in lan_peer.addresses:
                    if "%" in addr:
                        continue
                    lan_eps.append((addr, lan_peer.port))
            self.paths.update_candidates(key, Candidates(lan=lan_eps, reflexive=rec.endpoint,
                                                         host=list(rec.host_candidates)), now)
        if lines:
            uapi_client.set_(self.interface, lines)
            dev = uapi_client.parse_get(uapi_client.get(self.interface))
            have = {bytes.fromhex(p["public_key"]): p for p in dev["peers"]}
        self._engine = have
        for key in self.directory:
            p = have.get(key)
            if p is None:
                continue
            endpoint = parse_endpoint(p["endpoint"]) if p.get("endpoint") else None
            self.paths.observe(key, endpoint, int(p.get("last_handshake_time_sec", 0)) or None,
                               int(p.get("rx_bytes", 0)), now)

    def _probe(self, now: float) -> None:
        due = self.paths.probes_due(now)
        if not due:
            return
        lines = []
        for key, endpoints in due.items():
            lines += [f"public_key={key.hex()}", "update_only=true"]
            lines += [f"probe_endpoint={format_endpoint(ep)}" for ep in endpoints]
        uapi_client.set_(self.interface, lines)

    # ------------------------------------------------------------------ status
    def status(self, now: float | None = None) -> dict:
        now = now or time.time()
        st = self.state
        peers = []
        have = getattr(self, "_engine", {})
        rdv = have.get(self.rendezvous_key, {})
        peers.append({
            "name": "rendezvous", "public_key": _b64(self.rendezvous_key), "mesh_address": st.dns_address,
            "endpoint": rdv.get("endpoint"), "path": "rendezvous",
            "reason": self.directory_error or "directory reachable",
            "latest_handshake": int(rdv.get("last_handshake_time_sec", 0)) or None,
            "rx_bytes": int(rdv.get("rx_bytes", 0)), "tx_bytes": int(rdv.get("tx_bytes", 0)),
        })
        for key, rec in sorted(self.directory.items(), key=lambda kv: kv[1].name):
            p = have.get(key, {})
            path, reason = self.paths.describe(key, now)
            peers.append({
                "name": rec.name, "public_key": _b64(key), "mesh_address": rec.mesh_address,
                "endpoint": p.get("endpoint"), "path": path, "reason": reason,
                "latest_handshake": int(p.get("last_handshake_time_sec", 0)) or None,
                "rx_bytes": int(p.get("rx_bytes", 0)), "tx_bytes": int(p.get("tx_bytes", 0)),
            })
        return {
            "interface": self.interface,
            "self": {"name": st.name, "mesh_address": st.address, "public_key": _b64(st.public_key),
                     "listen_port": self.device.listen_port if self.device else None,
                     "mesh_id": st.mesh_id, "network": st.network},
            "directory": {"ok_at": self.directory_ok, "error": self.directory_error},
            "peers": peers,
            "updated_at": now,
        }

    def _write_status(self, now: float) -> None:
        os.makedirs(STATUS_DIRECTORY, mode=0o755, exist_ok=True)
        path = status_path(self.interface)
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(self.status(now), f, indent=1)
        os.replace(tmp, path)

    # ------------------------------------------------------------------ directory cache
    def _load_directory_cache(self) -> dict[bytes, MemberRecord]:
        path = os.path.join(self.state_dir, DIRECTORY_CACHE)
        try:
            with open(path) as f:
                doc = json.load(f)
            out = {}
            for item in doc:
                key = bytes.fromhex(item["public_key"])
                out[key] = MemberRecord(public_key=key,
                                        endpoint=tuple(item["endpoint"]) if item.get("endpoint") else None,
                                        allowed_ips=item.get("allowed_ips", []), name=item.get("name", ""),
                                        mesh_address=item.get("mesh_address", ""),
                                        host_candidates=[tuple(c) for c in item.get("host_candidates", [])])
            return out
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def _save_directory_cache(self, records: dict[bytes, MemberRecord]) -> None:
        path = os.path.join(self.state_dir, DIRECTORY_CACHE)
        doc = [{"public_key": k.hex(), "endpoint": list(r.endpoint) if r.endpoint else None,
                "allowed_ips": r.allowed_ips, "name": r.name, "mesh_address": r.mesh_address,
                "host_candidates": [list(c) for c in r.host_candidates]} for k, r in records.items()]
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, path)


def _b64(key: bytes) -> str:
    import base64
    return base64.b64encode(key).decode()

"""The rendezvous daemon: a meshwg node whose peers are the members.

WireGuard roaming keeps its view of each member's endpoint equal to that member's current
NAT mapping; it serves that view as DNS-SD (wgsd's layout, discovery.records) on its mesh
address, admits new members over the enrollment service, and keeps its engine's peers equal
to the membership in the state directory (so `meshwg remove`, run by another process, takes
effect within one update interval). Peers are driven through the control socket, as `wg`
would.
"""

from __future__ import annotations

import ipaddress
import logging
import threading

from meshwg.uapi import client as uapi_client
from meshwg.device.device import Device

from discovery.dnssd.server import DnsServer
from discovery.enroll.service import EnrollmentServer
from discovery.dnssd.records import Directory, MemberRecord
from discovery.dnssd.notify import Notifier
from discovery.traversal.report import REPORT_PORT_DEFAULT, CandidateReportServer
from discovery.stores.rendezvous import RendezvousState
from discovery.enroll.tokens import parse_endpoint

log = logging.getLogger("meshwg.rendezvous")

DEFAULT_INTERVAL = 1.0


def _endpoint_from_uapi(text: str | None) -> tuple[str, int] | None:
    if not text or text == "(none)":
        return None
    try:
        host, port = parse_endpoint(text)
    except ValueError:
        return None
    if "%" in host:          # a scoped link-local address means nothing to other members
        return None
    return host, port


def _parse_candidates(items: list[str]) -> list[tuple[str, int]]:
    out = []
    for item in items:
        try:
            out.append(parse_endpoint(item))
        except ValueError:
            continue
    return out


class RendezvousDaemon:
    def __init__(self, state_dir: str, interval: float = DEFAULT_INTERVAL,
                 public_dns: str | None = None, interface: str | None = None):
        self.state = RendezvousState.open(state_dir)
        self.interval = interval
        self.public_dns = public_dns
        self.interface = interface or self.state.interface
        self.network = ipaddress.ip_network(self.state.network)
        self.directory = Directory(self.state.zone)
        self.device: Device | None = None
        self.servers: list = []
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._published: list[MemberRecord] | None = None
        self.notifier: Notifier | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        st = self.state
        self.device = Device(self.interface, private_key=st.private_key, listen_port=st.listen_port or 0,
                             addresses=[f"{st.address}/{self.network.prefixlen}"], manage_routes=False)
        self.device.start()
        try:
            self.notifier = Notifier(st.zone, st.address)
            self.sync_once()
            dns = DnsServer(self.directory, st.address, st.dns_port).start()
            self.servers.append(dns)
            if self.public_dns:
                host, port = parse_endpoint(self.public_dns)
                self.servers.append(DnsServer(self.directory, host, port).start())
            self.servers.append(EnrollmentServer(st, "::", st.enroll_port,
                                                 on_member_added=self._member_added).start())
            self.servers.append(CandidateReportServer(st.address, REPORT_PORT_DEFAULT, self._candidates_reported).start())
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(target=self._loop, name="rendezvous-sync", daemon=True)
        self._thread.start()
        log.info("rendezvous %s: mesh %s, DNS-SD on %s:%d zone %s", self.interface, self.network,
                 st.address, st.dns_port, st.zone)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception:
                log.exception("stopping %s", server)
        self.servers.clear()
        if self.notifier is not None:
            self.notifier.close()
        if self.device is not None:
            self.device.stop()
            self.device = None
        self.state.close()

    # ------------------------------------------------------------------ callbacks
    def _member_added(self, member) -> None:
        log.info("enrolled %s (%s)", member.name, member.mesh_address)
        self._wake.set()

    def _candidates_reported(self, source_ip: str, candidates: list[str]) -> None:
        member = self.state.find_member(source_ip)
        if member is None:
            log.info("candidate report from %s, which is no member: ignored", source_ip)
            return
        self.state.update_candidates(member.public_key, candidates)
        self._wake.set()

    # ------------------------------------------------------------------ sync
    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                self.sync_once()
            except Exception:
                log.exception("directory update failed")

    def sync_once(self) -> None:
        """Make the engine's peers equal to the membership, then publish the directory."""
        members = self.state.members()
        wanted = {m.public_key: m for m in members}
        device = uapi_client.parse_get(uapi_client.get(self.interface))
        have = {bytes.fromhex(p["public_key"]): p for p in device["peers"]}
        lines: list[str] = []
        for key in have.keys() - wanted.keys():
            lines += [f"public_key={key.hex()}", "remove=true"]
        for key, m in wanted.items():
            allowed = f"{m.mesh_address}/{32 if ':' not in m.mesh_address else 128}"
            peer = have.get(key)
            if peer is None or peer["allowed_ips"] != [allowed]:
                lines += [f"public_key={key.hex()}", "replace_allowed_ips=true", f"allowed_ip={allowed}"]
        if lines:
            uapi_client.set_(self.interface, lines)
            device = uapi_client.parse_get(uapi_client.get(self.interface))
            have = {bytes.fromhex(p["public_key"]): p for p in device["peers"]}
        records = []
        for key, m in wanted.items():
            peer = have.get(key, {})
            records.append(MemberRecord(
                public_key=key, endpoint=_endpoint_from_uapi(peer.get("endpoint")),
                allowed_ips=[f"{m.mesh_address}/{32 if ':' not in m.mesh_address else 128}"],
                name=m.name, mesh_address=m.mesh_address,
                host_candidates=_parse_candidates(m.host_candidates)))
        if records == self._published:
            return                      # nothing changed: keep the serial, tell nobody
        self._published = records
        try:
            self.directory.set_members(records)
            self._notify_members(wanted.values())
        except ValueError as exc:       # one bad record must not freeze the directory
            log.warning("directory update: %s; publishing the members without it", exc)
            good = []
            for record in records:
                try:
                    Directory(self.state.zone).set_members([record])
                    good.append(record)
                except ValueError:
                    pass
            self.directory.set_members(good)
            self._notify_members(wanted.values())

    def _notify_members(self, members) -> None:
        """DNS NOTIFY to every member: re-read the directory now (inside the tunnel)."""
        if self.notifier is not None:
            self.notifier.notify(m.mesh_address for m in members)


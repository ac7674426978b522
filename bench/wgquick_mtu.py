"""Issue 9 case 17 figure: a TCP stream through `meshwg up` over a path with a 1280-byte MTU
whose far end drops IP fragments, once with no MTU line (meshwg derives it as wg-quick
does: the endpoint route's MTU minus 80 = 1200) and once with `MTU = 1420` (the old fixed
value: the engine's datagrams get fragmented and the fragments are dropped). The peer is
Debian's wireguard-go; a benchmark, not a test.

Run as root: `.venv/bin/python bench/wgquick_mtu.py [--seconds 3]`. Figures on a loaded
machine are lower bounds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from discovery.lab.engines import WireguardGo, meshwg_argv  # noqa: E402
from discovery.lab.netns import Cleanup, LabError, Namespace, poll, unique_name, veth  # noqa: E402
from discovery.lab.traffic import tcp_transfer  # noqa: E402
from discovery.lab.wg import PeerConfig, keypair, remove_uapi_socket  # noqa: E402


def run(mtu_line: str, seconds: float) -> str:
    with Cleanup() as lab, tempfile.TemporaryDirectory() as folder:
        client, server = Namespace(lab, "mtuc"), Namespace(lab, "mtus")
        veth(client, server, "192.0.2.1/24", "192.0.2.2/24", mtu=1280)
        server.run(["iptables", "-t", "raw", "-A", "PREROUTING", "-f", "-j", "DROP"])
        peer = WireguardGo(lab, server, "10.99.0.1/24", listen_port=51820)
        keys, name = keypair(), unique_name("mwm")
        path = os.path.join(folder, f"{name}.conf")
        with open(path, "w") as f:
            f.write(f"[Interface]\nPrivateKey = {keys.private}\nAddress = 10.99.0.2/24\n{mtu_line}"
                    f"[Peer]\nPublicKey = {peer.public_key}\nEndpoint = 192.0.2.2:51820\n"
                    f"AllowedIPs = 10.99.0.1/32\n")
        os.chmod(path, 0o600)
        lab.push(f"remove socket {name}", lambda: remove_uapi_socket(name))
        up = client.popen(meshwg_argv("up", path), name="meshwg-up")
        peer.add_peer(PeerConfig(keys.public, ["10.99.0.2/32"]))
        poll(lambda: "is up" in up.stderr(), 30, lambda: f"meshwg up\n{up.output()}")
        client.wait_ping("10.99.0.1", timeout=20)
        mtu = client.run(["ip", "-o", "link", "show", name]).stdout.split("mtu ")[1].split()[0]
        label = f"{mtu_line.strip() or 'no MTU line'} (link MTU {mtu})"
        try:
            result = tcp_transfer(client, server, "10.99.0.1", seconds=seconds,
                                  timeout=seconds + 12)
        except LabError:
            return f"{label}: the transfer stalled (the sender timed out)"
        return (f"{label}: {result.received_bytes} bytes in {result.seconds:.1f} s = "
                f"{result.received_bytes * 8 / result.seconds / 1e6:.1f} Mbit/s, "
                f"intact {result.intact}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    for mtu_line in ("", "MTU = 1420\n"):
        print(run(mtu_line, args.seconds), flush=True)


if __name__ == "__main__":
    main()

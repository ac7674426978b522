"""`make demo`: two meshwg nodes in network namespaces, a ping across the tunnel, `wg show`.

Everything it creates (namespaces, processes, temp files) is removed at the end, also on
failure or Ctrl-C.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from .keys import generate_private_key_b64, public_key_b64

SUFFIX = f"{os.getpid() % 100000}"
NS_A, NS_B = f"mwgdemoA{SUFFIX}", f"mwgdemoB{SUFFIX}"
IF_A, IF_B = f"mwdA{SUFFIX}", f"mwdB{SUFFIX}"


def sh(*cmd: str, ns: str | None = None, check: bool = True, capture: bool = False):
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    return subprocess.run(full, check=check, text=True,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.STDOUT if capture else None)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def main() -> int:
    if os.geteuid() != 0:
        print("demo: must run as root (it creates network namespaces and TUN devices)", file=sys.stderr)
        return 1
    # a lab in namespaces? prefer the full mesh lab once discovery is installed
    try:
        from discovery import lab  # noqa: F401
        if hasattr(lab, "main"):
            return lab.main([])
    except ImportError:
        pass
    procs = []
    tmp = tempfile.mkdtemp(prefix="meshwg-demo-")
    try:
        for ns in (NS_A, NS_B):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "add", "veth-demo", "netns", NS_A, "type", "veth", "peer", "name", "veth-demo", "netns", NS_B)
        sh("ip", "addr", "add", "198.18.50.1/24", "dev", "veth-demo", ns=NS_A)
        sh("ip", "addr", "add", "198.18.50.2/24", "dev", "veth-demo", ns=NS_B)
        sh("ip", "link", "set", "veth-demo", "up", ns=NS_A)
        sh("ip", "link", "set", "veth-demo", "up", ns=NS_B)
        ka, kb = generate_private_key_b64(), generate_private_key_b64()
        pa, pb = public_key_b64(ka), public_key_b64(kb)
        confs = {
            IF_A: f"[Interface]\nPrivateKey = {ka}\nListenPort = 51820\nAddress = 10.88.0.1/24\n\n"
                  f"[Peer]\nPublicKey = {pb}\nAllowedIPs = 10.88.0.2/32\nEndpoint = 198.18.50.2:51820\n",
            IF_B: f"[Interface]\nPrivateKey = {kb}\nListenPort = 51820\nAddress = 10.88.0.2/24\n\n"
                  f"[Peer]\nPublicKey = {pa}\nAllowedIPs = 10.88.0.1/32\nEndpoint = 198.18.50.1:51820\n",
        }
        for (name, text), ns in zip(confs.items(), (NS_A, NS_B)):
            path = os.path.join(tmp, f"{name}.conf")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            print(f"== starting meshwg on {name} in namespace {ns}")
            procs.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "meshwg", "up", path]))
        for name in confs:
            wait_for(lambda n=name: os.path.exists(f"/var/run/wireguard/{n}.sock"), 10, f"{name} to come up")
        print("== ping 10.88.0.2 from node A through the tunnel")
        sh("ping", "-c", "3", "-i", "0.3", "-W", "5", "10.88.0.2", ns=NS_A)
        print(f"== wg show (Debian's wg against meshwg) on {IF_A}")
        sh("wg", "show", IF_A)
        print(f"== wg show on {IF_B}")
        sh("wg", "show", IF_B)
        return 0
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for ns in (NS_A, NS_B):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)


if __name__ == "__main__":
    sys.exit(main())

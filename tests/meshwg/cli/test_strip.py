"""`meshwg strip FILE|IFACE` prints what `wg-quick strip` prints for the same file (byte
for byte: comments, blanks, odd spacing, CRLF, keys in any case), refuses a bad file with
the line `meshwg up` gives, and its output feeds `wg syncconf` of a running interface."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from discovery.lab.netns import Namespace, poll
from discovery.lab.wg import keypair
from tests.meshwg.cli.test_quick_netns import Up

MESHWG = [sys.executable, "-m", "meshwg"]
KEY, PEER, PEER2 = keypair(), keypair().public, keypair().public

FILES = {
    "plain": f"""[Interface]
PrivateKey = {KEY.private}
Address = 10.0.0.1/24, fd00::1/64
ListenPort = 51820
DNS = 10.0.0.53, corp.example
MTU = 1400
Table = off
SaveConfig = false
PreUp = echo pre %i
PostUp = iptables -A FORWARD -i %i -j ACCEPT # with a comment
PreDown = true
PostDown = echo "# not a comment for bash"

[Peer]
PublicKey = {PEER}
AllowedIPs = 10.0.0.2/32
Endpoint = vpn.example.com:51820
PersistentKeepalive = 25
""",
    "odd": f"""# a file written by hand
  [interface]   # lower case, comment
\tprivatekey=   {KEY.private}\t
address=10.1.0.1/24
  ADDRESS   =   fd01::1/64   # again
# Address = 10.9.9.9/24 (a comment: kept)
mtu=1380
dns =1.1.1.1
FwMark = 0x1234

[Peer]  # first peer
publickey = {PEER}
AllowedIPs = 10.1.0.0/24,   fd01::/64
[Peer]
PublicKey = {PEER2}
allowedips = 0.0.0.0/0
[INTERFACE]
Table = 1234
ListenPort = 4000""",     # no newline at the end
    "crlf": f"[Interface]\r\nPrivateKey = {KEY.private}\r\nAddress = 10.2.0.1/24\r\n"
            f"Table = auto\r\n\r\n[Peer]\r\nPublicKey = {PEER}\r\nAllowedIPs = 10.2.0.2/32\r\n",
    "empty peers": f"[Interface]\nPrivateKey = {KEY.private}\nSaveConfig = true\n\n\n",
}


def write(tmp_path, name: str, text: str):
    path = tmp_path / f"{name}.conf"
    path.write_bytes(text.encode())
    path.chmod(0o600)
    return path


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(MESHWG + list(args), capture_output=True, text=True, timeout=60, **kw)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("wg-quick"),
                    reason="wg-quick strip needs wg-quick and root")
@pytest.mark.parametrize("case", sorted(FILES))
def test_strip_prints_what_wg_quick_strip_prints(case, tmp_path):
    path = write(tmp_path, "wgs0", FILES[case])
    theirs = subprocess.run(["wg-quick", "strip", str(path)], capture_output=True, timeout=60)
    assert theirs.returncode == 0, theirs.stderr
    ours = subprocess.run(MESHWG + ["strip", str(path)], capture_output=True, timeout=60)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == theirs.stdout
    assert b"Address" not in ours.stdout.replace(b"# Address", b"").split(b"[Peer]")[0]


def test_strip_drops_a_byte_order_mark_that_wg_quick_would_pass_on(tmp_path):
    """wg-quick keeps "\\ufeff[Interface]" (not a section to it, so Address reaches wg,
    which refuses it); meshwg strips the mark and the wg-quick keys."""
    path = write(tmp_path, "wgs1", "\ufeff" + FILES["plain"])
    out = run("strip", str(path))
    assert out.returncode == 0, out.stderr
    assert out.stdout == run("strip", str(write(tmp_path, "wgs2", FILES["plain"]))).stdout
    assert out.stdout.startswith("[Interface]\n") and "Address" not in out.stdout


@pytest.mark.parametrize("text, where", [
    (f"[Interface]\nPrivateKey = {KEY.private}\nMTU = 12\n", ":3: MTU"),
    (f"[Interface]\nPrivateKey = {KEY.private}\n[Peer]\nAllowedIPs = 10.0.0.0/8\n", ":3: [Peer]"),
    ("[Interface]\nAddress = 10.0.0.1/24\n", ":1: [Interface] section without PrivateKey"),
    (f"[Interface]\nPrivateKey = {KEY.private}\nPersistentKeepalive = 5\n", ":3: unknown key"),
])
def test_a_bad_file_is_the_line_meshwg_up_gives(text, where, tmp_path):
    path = write(tmp_path, "wgs3", text)
    strip, up = run("strip", str(path)), run("up", str(path))
    assert strip.returncode == 1 and strip.stdout == ""
    line = strip.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith(f"meshwg: {path}{where}"), line
    assert line == up.stderr.strip()


def test_an_interface_name_means_its_file_in_etc_wireguard():
    out = run("strip", "nosuchmwg0")
    assert out.returncode == 1
    assert out.stderr.startswith("meshwg: /etc/wireguard/nosuchmwg0.conf: cannot read")


@pytest.mark.netns
def test_wg_syncconf_takes_it(lab, tmp_path):
    """`wg syncconf IFACE <(meshwg strip FILE)` on a running `meshwg up`: a peer added to
    the file appears, the removed one goes, the wg-quick keys do not trouble wg."""
    c = Namespace(lab, "qs")
    up = Up(lab, c, tmp_path, f"Address = 10.41.0.1/24\nMTU = 1400\nTable = off\nPostUp = true # x\n"
                              f"SaveConfig = false\n\n[Peer]\nPublicKey = {PEER}\n"
                              f"AllowedIPs = 10.41.0.2/32\n")
    up.wait_up()
    text = up.path.read_text().replace(PEER, PEER2)
    up.path.write_text(text)
    out = c.run(["bash", "-c", f"wg syncconf {up.name} <({' '.join(MESHWG)} strip {up.path})"],
                check=False)
    assert out.returncode == 0, out.stderr
    poll(lambda: c.run(["wg", "show", up.name, "peers"]).stdout.split() == [PEER2], 10,
         "the file's peers")
    up.down()

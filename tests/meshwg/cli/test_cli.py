"""The `meshwg` command line as a user meets it: keys, errors, help, up/show/down."""

from __future__ import annotations

from tests import REPO

import json
import os
import shutil
import subprocess
import sys

import pytest

from discovery.lab.netns import Namespace, poll
from discovery.lab.wg import keypair
from tests.conftest import require_netns

MESHWG = [sys.executable, "-m", "meshwg"]


def run(*args: str, input: str | None = None, ns: str | None = None, timeout: float = 30):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + MESHWG + list(args)
    return subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def test_help_explains_every_command():
    out = run("--help")
    assert out.returncode == 0
    for command in ("genkey", "pubkey", "genpsk", "up", "down", "strip", "show", "rendezvous",
                    "invite", "members", "remove", "join", "status", "lab"):
        assert command in out.stdout
    assert "wg-quick strip" in " ".join(out.stdout.split())    # however argparse wraps it
    up = run("up", "--help")
    assert "wg-quick" in up.stdout and "--interface" in up.stdout


@pytest.mark.skipif(shutil.which("wg") is None, reason="Debian's wg is not installed")
def test_keys_interchangeable_with_wg():
    private = run("genkey").stdout.strip()
    public = run("pubkey", input=private + "\n").stdout.strip()
    wg_public = subprocess.run(["wg", "pubkey"], input=private + "\n", capture_output=True, text=True).stdout.strip()
    assert public == wg_public and len(public) == 44
    wg_private = subprocess.run(["wg", "genkey"], capture_output=True, text=True).stdout.strip()
    ours = run("pubkey", input=wg_private).stdout.strip()
    theirs = subprocess.run(["wg", "pubkey"], input=wg_private, capture_output=True, text=True).stdout.strip()
    assert ours == theirs
    psk = run("genpsk").stdout.strip()
    assert subprocess.run(["wg", "pubkey"], input=psk, capture_output=True, text=True).returncode == 0


def test_bad_key_on_stdin_is_one_line_error():
    out = run("pubkey", input="not-a-key\n")
    assert out.returncode != 0
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr


def test_malformed_config_names_file_line_and_value(tmp_path):
    conf = tmp_path / "wgbad.conf"
    conf.write_text("[Interface]\nPrivateKey = aGVsbG8=\nListenPort = 51820\n")
    conf.chmod(0o600)
    out = run("up", str(conf))
    assert out.returncode == 1
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{conf}:2" in err and "PrivateKey" in err and "aGVsbG8=" not in err   # a secret: never echoed
    assert "Traceback" not in err
    assert not os.path.exists("/sys/class/net/wgbad")        # nothing was created


def test_unknown_key_and_bad_address(tmp_path):
    key = run("genkey").stdout.strip()
    conf = tmp_path / "wgbad2.conf"
    conf.write_text(f"[Interface]\nPrivateKey = {key}\nAddress = 10.0.0.300/24\n")
    conf.chmod(0o600)
    out = run("up", str(conf))
    assert out.returncode == 1 and f"{conf}:3" in out.stderr and "10.0.0.300" in out.stderr
    conf.write_text(f"[Interface]\nPrivateKey = {key}\nColour = blue\n")
    out = run("up", str(conf))
    assert out.returncode == 1 and f"{conf}:3" in out.stderr and "Colour" in out.stderr


def test_timer_option_errors(tmp_path):
    key = run("genkey").stdout.strip()
    conf = tmp_path / "wgt.conf"
    conf.write_text(f"[Interface]\nPrivateKey = {key}\n")
    conf.chmod(0o600)
    out = run("up", str(conf), "--timer", "nonsense_time=3")
    assert out.returncode == 1 and "nonsense_time" in out.stderr and "Traceback" not in out.stderr
    for value in ("nan", "inf", "1e309"):
        out = run("up", str(conf), "--timer", f"rekey_timeout={value}")
        assert out.returncode == 1 and "not a finite number" in out.stderr, out.stderr


def test_down_of_unknown_interface_is_clear():
    out = run("down", "nosuchmwg0")
    assert out.returncode == 1 and "nosuchmwg0" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("name", ["../../tmp/x", "my wg", "a" * 16, "wg0:1", ".."])
def test_interface_names_outside_wg_quicks_pattern_are_refused(name, tmp_path):
    """`meshwg down NAME` reads NAME.pid under the run directory and signals that pid: a
    name with '/' must not reach outside it; `meshwg up` refuses the same names."""
    out = run("down", name)
    assert out.returncode == 1 and "must be 1-15 characters of" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and "pid" not in out.stderr
    conf = tmp_path / "ok.conf"
    conf.write_text(f"[Interface]\nPrivateKey = {run('genkey').stdout.strip()}\n")
    conf.chmod(0o600)
    out = run("up", str(conf), "--interface", name)
    assert out.returncode == 1 and "must be 1-15 characters of" in out.stderr, out.stderr


def test_down_never_signals_a_process_that_reused_a_stale_pid():
    """A pid file left by a SIGKILLed `meshwg up` whose pid another program now has: down
    removes the file (saying so) and leaves that program alone."""
    from meshwg.util.files import process_running, write_pid_file
    name = f"mwpid{os.getpid() % 100000}"
    other = subprocess.Popen(["sleep", "60"])
    try:
        path = write_pid_file(name)
        with open(path, "w") as f:
            f.write(f"{other.pid}\n")
        out = run("down", name)
        assert out.returncode == 0, out.stderr
        assert f"removed what a killed meshwg left: stale {path} (pid {other.pid})" in out.stderr
        assert process_running(other.pid) and not os.path.exists(path)
    finally:
        other.kill()
        other.wait()


def test_up_takes_a_bare_interface_name_like_wg_quick(tmp_path, monkeypatch):
    """`wg-quick up wg0` reads /etc/wireguard/wg0.conf; a file of that name here wins."""
    from meshwg.cli.interface import config_path
    assert config_path("wg0", str(tmp_path)) == str(tmp_path / "wg0.conf")
    assert config_path("./wg0", str(tmp_path)) == "./wg0"
    assert config_path("wg0.conf", "/x") == "wg0.conf"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wg1").write_text("")
    assert config_path("wg1", "/x") == "wg1"
    out = run("up", "nosuchmwg0")
    assert out.returncode == 1 and "/etc/wireguard/nosuchmwg0.conf: cannot read" in out.stderr


def test_down_takes_the_config_file_like_wg_quick():
    out = run("down", "/etc/wireguard/nosuchmwg0.conf")
    assert out.returncode == 1 and "nosuchmwg0 is not a running meshwg interface" in out.stderr


def test_show_of_unknown_interface_is_clear():
    out = run("show", "nosuchmwg0")
    assert out.returncode == 1 and "nosuchmwg0" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.netns
def test_up_show_json_warning_and_down(lab, tmp_path):
    """`meshwg up` warns about a world-readable key file, serves `show --json` and `wg`,
    and `meshwg down` removes the interface and its control socket."""
    require_netns()
    ns = Namespace(lab, "cli")
    name = f"mwc{os.getpid() % 100000}"
    key = run("genkey").stdout.strip()
    peer_key = keypair()
    conf = tmp_path / f"{name}.conf"
    conf.write_text(f"[Interface]\nPrivateKey = {key}\nListenPort = 51999\nAddress = 10.66.0.1/24\n\n"
                    f"[Peer]\nPublicKey = {peer_key.public}\nAllowedIPs = 10.66.0.2/32\n")
    conf.chmod(0o644)
    daemon = ns.popen(MESHWG + ["up", str(conf)], name="meshwg-up", cwd=os.getcwd())
    sock = f"/var/run/wireguard/{name}.sock"
    lab.push("remove the control socket", lambda: os.path.exists(sock) and os.unlink(sock))
    poll(lambda: os.path.exists(sock), 10, "control socket")
    assert oct(os.stat(sock).st_mode & 0o777) in ("0o700", "0o600", "0o755") and not os.stat(sock).st_mode & 0o007
    shown = json.loads(run("show", name, "--json").stdout)
    assert shown["listen_port"] == 51999
    assert shown["peers"][0]["public_key"] == peer_key.public
    assert shown["peers"][0]["allowed_ips"] == ["10.66.0.2/32"]
    wg = subprocess.run(["wg", "show", name, "listen-port"], capture_output=True, text=True)
    assert wg.stdout.strip() == "51999"
    link = ns.run(["ip", "-o", "link", "show", name]).stdout
    assert "mtu 1420" in link and "UP" in link
    # hostile datagrams are dropped and counted, and `meshwg show` reports the count
    ns.run(["python3", "-c", "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
            "[s.sendto(b'\\x04garbage', ('127.0.0.1', 51999)) for _ in range(3)];"
            "s.sendto(bytes(148), ('127.0.0.1', 51999))"])

    def dropped():
        counters = json.loads(run("show", name, "--json").stdout).get("counters", {})
        return counters.get("malformed", 0) >= 4 and counters
    counters = poll(dropped, 10, "malformed datagrams counted in meshwg show", interval=0.2)
    assert counters["malformed"] >= 4
    assert "counters: " in run("show", name).stdout
    out = run("down", name)
    assert out.returncode == 0, out.stderr
    poll(lambda: not daemon.alive, 10, "meshwg up to exit")
    assert not os.path.exists(sock)
    assert ns.run(["ip", "link", "show", name], check=False).returncode != 0
    assert "chmod 600" in daemon.stderr()          # the world-readable key file was flagged

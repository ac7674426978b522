"""The example DNS configs users copy (configs/dns) render completely and pass the servers'
own checkers (named-checkconf -z, named-checkzone, knotc conf-check); no namespaces."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from discovery.lab.dns_servers import (CONFIG_DIR, LabError, knot_secondary_remotes,
                                      render_template)

TEMPLATES = ("named.conf.meshwg-primary", "named.conf.meshwg-secondary",
             "knot.conf.meshwg-primary", "knot.conf.meshwg-secondary", "meshwg-zone.template")
ZONE = "mesh.example.org"


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(f"/usr/sbin/{name}")
    if path is None:
        pytest.skip(f"{name} is missing (Debian packages bind9, knot)")
    return path


@pytest.fixture
def values(tmp_path):
    keygen = tool("tsig-keygen")
    keys = {}
    for role in ("update", "transfer", "read"):
        path = tmp_path / f"meshwg-{role}.key"
        path.write_text(subprocess.run([keygen, "-a", "hmac-sha256", f"meshwg-{role}"],
                                       capture_output=True, text=True, check=True).stdout)
        keys[role] = path
    secret = keys["transfer"].read_text().split('"')[3]
    return {"ZONE": ZONE, "ADDRESS": "192.0.2.1", "PORT": "53", "STATE_DIR": str(tmp_path),
            "UPDATE_KEY_FILE": str(keys["update"]), "TRANSFER_KEY_FILE": str(keys["transfer"]),
            "READ_KEY_FILE": str(keys["read"]), "TRANSFER_KEY_ALGORITHM": "hmac-sha256",
            "TRANSFER_KEY_SECRET": secret, "UPDATE_KEY_ALGORITHM": "hmac-sha256",
            "UPDATE_KEY_SECRET": keys["update"].read_text().split('"')[3],
            "SECONDARY_REMOTES": knot_secondary_remotes([("192.0.2.2", 53), ("192.0.2.3", 53)])[0],
            "SECONDARY_IDS": "secondary1, secondary2",
            "RENDEZVOUS_ADDRESSES": "192.0.2.10; 192.0.2.11; 127.0.0.1;",
            "PRIMARY_NAME": "ns1.example.org", "PRIMARY_ADDRESS": "192.0.2.1",
            "PRIMARY_PORT": "53",
            "SECONDARIES": "192.0.2.2 port 53 key meshwg-transfer; 192.0.2.3 port 53 key meshwg-transfer;"}


def test_every_template_renders_completely_and_refuses_missing_values(values) -> None:
    for name in TEMPLATES:
        text = render_template(name, values)
        assert "{{" not in text and "}}" not in text, name
    with pytest.raises(LabError, match="no value for .*PRIMARY_ADDRESS"):
        render_template("knot.conf.meshwg-secondary", {"ZONE": ZONE})
    assert (CONFIG_DIR / "README.md").exists()


def test_bind_accepts_the_primary_and_secondary_configs_and_the_zone(values, tmp_path) -> None:
    checkconf, checkzone = tool("named-checkconf"), tool("named-checkzone")
    zone_file = tmp_path / f"{ZONE}.zone"
    zone_file.write_text(render_template("meshwg-zone.template", values))
    zone = subprocess.run([checkzone, ZONE, str(zone_file)], capture_output=True, text=True)
    assert zone.returncode == 0, zone.stdout + zone.stderr
    for name in ("named.conf.meshwg-primary", "named.conf.meshwg-secondary"):
        config = tmp_path / name
        config.write_text(render_template(name, values))
        check = subprocess.run([checkconf, "-z", str(config)], capture_output=True, text=True)
        assert check.returncode == 0, name + check.stdout + check.stderr


@pytest.mark.parametrize("name", ["knot.conf.meshwg-secondary", "knot.conf.meshwg-primary"])
def test_knot_accepts_the_secondary_and_primary_configs(values, tmp_path, name) -> None:
    knotc = tool("knotc")
    config = tmp_path / "knot.conf"
    knot_networks = {**values, "RENDEZVOUS_ADDRESSES": "192.0.2.10, 192.0.2.11, 127.0.0.1"}
    config.write_text(render_template(name, knot_networks))
    check = subprocess.run([knotc, "-c", str(config), "conf-check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

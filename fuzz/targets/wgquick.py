"""wg-quick configuration files (meshwg.config.wgquick.parse_config). Refusal: ConfigError.
Endpoint host names are never resolved here: the resolver refuses every name."""

from __future__ import annotations

import socket

from meshwg.config.wgquick import ConfigError, parse_config

ALLOWED = (ConfigError,)
MAX_LEN = 16384             # text: long enough for numbers past int()'s digit limit
TOKENS = (b"\n", b" = ", b"[Interface]\n", b"[Peer]\n", b"PrivateKey", b"PublicKey",
          b"PresharedKey", b"AllowedIPs", b"Endpoint", b"Address", b"DNS", b"MTU", b"Table",
          b"ListenPort", b"FwMark", b"PersistentKeepalive", b"SaveConfig", b"PostUp", b"#",
          b"mNb7OIIXTdgW4khM7OFlzJ+UPs7lmcWHV7xjPgakMkQ=", b"0x", b",", b"::/0", b"0.0.0.0/0")


def _no_resolver(host, port, *args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "names are not resolved while fuzzing")


def one_input(data: bytes) -> None:
    parse_config(data.decode("utf-8", "replace"), "<fuzz>", _no_resolver)


def seeds() -> dict[str, bytes]:
    return {
        "full": b"""[Interface]
# a comment
PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
Address = 10.0.0.1/24, fd00::1/64
ListenPort = 51820
MTU = 1420
DNS = 10.0.0.53, example.com
Table = auto
FwMark = 0x1234
SaveConfig = false
PostUp = echo up

[Peer]
PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
PresharedKey = FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=
AllowedIPs = 10.0.0.2/32, fd00::2/128
Endpoint = 192.0.2.1:51820
PersistentKeepalive = 25

[Peer]
PublicKey = TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=
AllowedIPs = 0.0.0.0/0, ::/0
Endpoint = [2001:db8::1]:443
""",
        "minimal": b"[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n",
        "hostname-endpoint": b"[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n"
                             b"[Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n"
                             b"Endpoint = vpn.example.com:51820\nAllowedIPs = 10.0.0.0/8\n",
    }

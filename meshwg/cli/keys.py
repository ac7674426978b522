"""`meshwg genkey`, `pubkey`, `genpsk`: keys interchangeable with `wg genkey` and friends."""

from __future__ import annotations

import sys

from meshwg.cli.common import fail


def cmd_genkey(args) -> int:
    from meshwg.core.keys import generate_private_key_b64
    print(generate_private_key_b64())
    return 0


def cmd_pubkey(args) -> int:
    from meshwg.core.keys import KeyFormatError, public_key_b64
    text = sys.stdin.read().strip()
    try:
        print(public_key_b64(text))
    except KeyFormatError as exc:
        fail(f"pubkey: {exc}")
    return 0


def cmd_genpsk(args) -> int:
    from meshwg.core.keys import generate_psk_b64
    print(generate_psk_b64())
    return 0

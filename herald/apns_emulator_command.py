"""``herald apns-emulator``: run the APNs emulator standalone (for a worker or app under test).

With ``--public-key`` it trusts that provider key; without, it makes a key pair and
writes the private half (``key.p8``) next to the CA in ``--cert-dir``, and prints the
``HERALD_APNS_*`` settings that point a Herald worker at it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare the command and its options."""
    cmd = sub.add_parser("apns-emulator", help="a local APNs stand-in (HTTP/2 over TLS, ES256 tokens)")
    cmd.add_argument("--host", default="127.0.0.1")
    cmd.add_argument("--port", type=int, default=2197, help="HTTP/2 port (default 2197)")
    cmd.add_argument("--inspect-port", type=int, default=2198, help="inspection API port (default 2198)")
    cmd.add_argument("--key-id", default="HERALDDEV1", help="provider key id accepted")
    cmd.add_argument("--team-id", default="HERALDTEAM", help="team id the key belongs to")
    cmd.add_argument("--public-key", type=Path, help="PEM public key to trust (default: generate a pair)")
    cmd.add_argument("--topic", action="append", default=[], help="allowed apns-topic (repeatable; default any)")
    cmd.add_argument("--cert-dir", type=Path, default=Path(".herald-apns"), help="where the CA (and key) are kept")
    cmd.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    # Imported here: h2 and the TLS/JWT stack are the emulator's alone (every herald command loads this module).
    from herald.apns_emulator import generate_signing_key, serve

    cert_dir: Path = args.cert_dir
    cert_dir.mkdir(parents=True, exist_ok=True)
    if args.public_key is not None:
        public_pem = args.public_key.read_text()
    else:
        private_pem, public_pem = generate_signing_key()
        key_path = cert_dir / "key.p8"
        key_path.write_text(private_pem)
        key_path.chmod(0o600)
        print(  # noqa: T201 - the command's output
            "Point a Herald worker at this emulator with:\n"
            f"  HERALD_APNS_KEY_PATH={key_path}\n"
            f"  HERALD_APNS_KEY_ID={args.key_id}\n"
            f"  HERALD_APNS_TEAM_ID={args.team_id}\n"
            f"  HERALD_APNS_TOPIC={(args.topic or ['dev.herald.app'])[0]}\n"
            f"  HERALD_APNS_SERVER={args.host}:{args.port}\n"
            f"  HERALD_APNS_CA_PATH={cert_dir / 'ca.pem'}\n"
            f"Inspection API: http://{args.host}:{args.inspect_port}/received\n",
            flush=True,
        )
    coro = serve(
        args.host,
        args.port,
        args.inspect_port,
        args.key_id,
        args.team_id,
        public_pem,
        cert_dir,
        topics=args.topic or None,
        latency=args.latency,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(coro)
    return 0

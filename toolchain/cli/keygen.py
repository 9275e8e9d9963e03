"""`edgec keygen`: make an Ed25519 key pair to sign bundles with.

    edgec keygen release.key          # writes release.key (private, mode 0600) and release.key.pub
    edgec bundle sign sst2-host.edgec --key release.key
    edgec run sst2-host.edgec --trust release.key.pub --text "..."   # on the device

The private key stays where bundles are signed; the public key goes to the devices (`edgec run
--trust`, `edgec agent --trust`, `edgec bundle verify --trust`). Existing files are never
overwritten. Needs the `cryptography` package.
"""

from __future__ import annotations

import argparse

from toolchain.bundle.sign import generate_keys

HELP = "make an Ed25519 key pair for signing bundles"
IMPLEMENTED = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", metavar="KEY", help="the private key file to write (and KEY.pub)")
    parser.add_argument("--public", metavar="KEY.pub", help="the public key file (default KEY.pub)")


def run(args: argparse.Namespace) -> int:
    key_id = generate_keys(args.key, args.public)
    public = args.public or f"{args.key}.pub"
    print(f"{args.key}: private key (keep it secret; mode 0600)")
    print(f"{public}: public key {key_id[:16]} (give it to --trust)")
    return 0

"""`edgec agent`: serve on-device measurements to `edgec profile --target` over HTTP.

    edgec agent --host 0.0.0.0 --port 9600 --token-file ~/.edgec-token --device jetson-orin-nano-8gb
    edgec agent ... --trust release.key.pub      # run only bundles signed by that key

Run it on the target. It accepts only verified bundles (every sha256 checked, every path inside
the bundle), measures their ONNX model under the requested protocol in a fresh process, one
request at a time, and answers with its own environment header. An upload's archive is checked
against the limits below before a byte is unpacked (413 when over them). Hashes catch corruption,
not tampering: without --trust, anyone holding the token can have any model run here; with
--trust, only bundles signed by one of those keys are (422 otherwise). Requests without the bearer
token, oversize or truncated uploads, bad bundles and malformed requests are refused with a clear
status.
"""

from __future__ import annotations

import argparse

from toolchain.bundle.manifest import ArchiveLimits
from toolchain.bundle.sign import TrustedKeys
from toolchain.profile.agent import read_token, serve
from toolchain.target import DeviceTarget

HELP = "serve on-device measurements to edgec profile over HTTP (run on the target)"
IMPLEMENTED = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=9600, help="port (0: any free one)")
    parser.add_argument("--token-file", required=True, metavar="F", help="the shared secret")
    parser.add_argument("--device", help="the profile name this machine answers as")
    parser.add_argument("--max-upload-mb", type=float, default=512)
    parser.add_argument(
        "--trust",
        action="append",
        metavar="KEY.pub",
        help="run only bundles signed by this public key (repeatable; edgec keygen)",
    )
    limits = ArchiveLimits()
    parser.add_argument(
        "--max-members",
        type=int,
        default=limits.max_members,
        help="files and folders an uploaded archive may hold (default %(default)s)",
    )
    parser.add_argument(
        "--max-unpacked-mb",
        type=float,
        default=limits.max_total_bytes / 2**20,
        help="what an upload may unpack to, all files together (default %(default)g)",
    )
    parser.add_argument(
        "--max-member-mb",
        type=float,
        default=limits.max_member_bytes / 2**20,
        help="the largest file an upload may hold (default %(default)g)",
    )
    parser.add_argument(
        "--max-ratio",
        type=float,
        default=limits.max_ratio,
        help="unpacked size over upload size, against compression bombs (default %(default)g)",
    )


def run(args: argparse.Namespace) -> int:
    device = args.device
    if device:
        device = DeviceTarget.resolve(device).name
    else:
        import platform

        device = platform.node()
    limits = ArchiveLimits(
        max_members=args.max_members,
        max_member_bytes=int(args.max_member_mb * 2**20),
        max_total_bytes=int(args.max_unpacked_mb * 2**20),
        max_ratio=args.max_ratio,
    )
    trust = TrustedKeys.load(args.trust) if args.trust else None
    try:
        serve(
            args.host,
            args.port,
            token=read_token(args.token_file),
            device=device,
            max_upload_mb=args.max_upload_mb,
            trust=trust,
            archive_limits=limits,
        )
    except KeyboardInterrupt:
        return 130
    return 0

"""`edgec agent`: serve on-device measurements to `edgec profile --target` over HTTP(S).

    edgec agent --host 0.0.0.0 --port 9600 --token-file ~/.edgec-token --device jetson \\
        --tls-cert agent.crt --tls-key agent.key
    edgec agent --port 9600 --token-file ~/.edgec-token     # 127.0.0.1: reach it by SSH tunnel
    edgec agent ... --trust release.key.pub      # run only bundles signed by that key

Run it on the target. It accepts only verified bundles (every sha256 checked, every path inside
the bundle), measures their ONNX model under the requested protocol in a fresh process, one
request at a time, and answers with its own environment header. An upload's archive is checked
against the limits below before a byte is unpacked (413 when over them). Hashes catch corruption,
not tampering: without --trust, anyone holding the token can have any model run here; with
--trust, only bundles signed by one of those keys are (422 otherwise). Requests without the bearer
token, oversize, truncated or too slow uploads, bad bundles and malformed requests are refused
with a clear status; beyond --max-connections open connections it answers 503. The token file
must be private (chmod 600); listening beyond this machine without TLS prints a warning.
"""

from __future__ import annotations

import argparse
import math

from toolchain.bundle.manifest import ArchiveLimits
from toolchain.bundle.sign import TrustedKeys
from toolchain.profile.agent import read_token, serve
from toolchain.profile.connections import ConnectionLimits

HELP = "serve on-device measurements to edgec profile over HTTP(S) (run on the target)"
IMPLEMENTED = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=9600, help="port (0: any free one)")
    parser.add_argument(
        "--token-file", required=True, metavar="F", help="the shared secret (chmod 600)"
    )
    parser.add_argument("--device", help="the profile name this machine answers as")
    parser.add_argument("--max-upload-mb", type=float, default=512)
    parser.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    defaults = ConnectionLimits()
    parser.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        metavar="N",
        help="open connections at a time; more are answered 503 (default "
        f"{defaults.max_connections})",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=defaults.header_timeout_s,
        metavar="S",
        help="seconds for a request's headers to arrive, in all (default "
        f"{defaults.header_timeout_s:g})",
    )
    parser.add_argument(
        "--min-upload-rate",
        type=float,
        default=defaults.min_upload_mb_s,
        metavar="MB/S",
        help=f"the body may take {defaults.body_timeout_s:g} s plus its size at this rate "
        f"(default {defaults.min_upload_mb_s:g})",
    )
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
        device = _profile_name(device)
    else:
        import platform

        device = platform.node()
    connections = ConnectionLimits(
        header_timeout_s=args.header_timeout,
        min_upload_mb_s=args.min_upload_rate,
        max_connections=args.max_connections,
    )
    limits = ArchiveLimits(
        max_members=args.max_members,
        max_member_bytes=_bytes(args.max_member_mb),
        max_total_bytes=_bytes(args.max_unpacked_mb),
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
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            limits=connections,
            trust=trust,
            archive_limits=limits,
        )
    except KeyboardInterrupt:
        return 130
    return 0


def _profile_name(device: str) -> str:
    """The profile name ``device`` (a name, alias or profile file) stands for. A device with only
    edgec[runtime] has no pyyaml: there, names and aliases are read from the profile files'
    ``name:``/``aliases:`` lines (toolchain.devices.names)."""
    try:
        import yaml  # noqa: F401
    except ImportError:
        from toolchain.devices.names import profile_names
        from toolchain.errors import UnknownDeviceError

        names = profile_names()
        if device.lower() not in names:
            known = ", ".join(sorted(set(names.values())))
            raise UnknownDeviceError(
                f"unknown device {device!r}: known names are {known} (a profile file needs "
                "pyyaml: pip install pyyaml)"
            ) from None
        return names[device.lower()]
    from toolchain.target import DeviceTarget

    return DeviceTarget.resolve(device).name


def _bytes(megabytes: float) -> int | float:
    """Megabytes as whole bytes; NaN and infinity passed on for ArchiveLimits to refuse."""
    size = megabytes * 2**20
    return int(size) if math.isfinite(size) else size

"""`edgec agent`: serve on-device measurements to `edgec profile --target` over HTTP.

    edgec agent --host 0.0.0.0 --port 9600 --token-file ~/.edgec-token --device jetson-orin-nano-8gb

Run it on the target. It accepts only verified bundles (every sha256 checked), measures their
ONNX model under the requested protocol in a fresh process, one request at a time, and answers
with its own environment header. Requests without the bearer token, oversize or truncated
uploads, tampered bundles and malformed requests are refused with a clear status.
"""

from __future__ import annotations

import argparse

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


def run(args: argparse.Namespace) -> int:
    device = args.device
    if device:
        device = DeviceTarget.resolve(device).name
    else:
        import platform

        device = platform.node()
    try:
        serve(
            args.host,
            args.port,
            token=read_token(args.token_file),
            device=device,
            max_upload_mb=args.max_upload_mb,
        )
    except KeyboardInterrupt:
        return 130
    return 0

"""``affedge doctor``: backends, execution providers, GPU, CUDA/TensorRT, cameras, microphones,
and whether a bundle's engines fit this machine (exit 1 when ``--bundle`` cannot be used)."""
from __future__ import annotations

HELP = "report backends, GPU, CUDA/TensorRT, cameras and microphones available here"


def add_arguments(p) -> None:
    p.add_argument("--bundle", default=None, help="also check this bundle (artifacts, engines "
                                                  "vs this GPU, the backend 'auto' picks); "
                                                  "exit 1 when it cannot be loaded")
    p.add_argument("--bundle-digest", default=None, metavar="SHA256",
                   help="with --bundle: refuse it unless its digest is this (as affedge run)")
    p.add_argument("--trust", action="append", default=None, metavar="PUBKEY",
                   help="with --bundle: refuse it unless it is signed by this Ed25519 public "
                        "key (repeatable; as affedge run)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="the report as JSON on stdout (or written to FILE)")
    p.add_argument("--no-devices", action="store_true", help="skip probing cameras/microphones")


def run(args) -> int:
    import json
    import sys

    from affedge import log
    from affedge.sdk.doctor import collect, format_report

    if (args.bundle_digest or args.trust) and args.bundle is None:
        raise ValueError("--bundle-digest and --trust check a bundle: add --bundle B")
    rep = collect(bundle=args.bundle, devices=not args.no_devices,
                  expect_digest=args.bundle_digest, trust=args.trust)
    b = rep.get("bundle")
    failed = isinstance(b, dict) and "error" in b
    if args.json == "-":
        print(json.dumps(rep, indent=2, default=str))
    else:
        # a bundle that cannot be used is said once, as the error line below the report
        print(format_report({k: v for k, v in rep.items() if not (failed and k == "bundle")}))
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(rep, fh, indent=2, default=str)
            log.status(f"JSON: {args.json}")
    if failed:
        kind, _, why = str(b["error"]).partition(": ")  # "FileNotFoundError: ..." -> "..."
        msg = why if why and kind.isidentifier() else str(b["error"])
        where = "" if str(args.bundle) in msg else f"bundle {args.bundle}: "  # named once
        print(f"affedge doctor: error: {where}{msg}", file=sys.stderr)
        return 1
    return 0

"""``affedge doctor``: backends, execution providers, GPU, CUDA/TensorRT, cameras, microphones,
and whether a bundle's engines fit this machine."""
from __future__ import annotations

HELP = "report backends, GPU, CUDA/TensorRT, cameras and microphones available here"


def add_arguments(p) -> None:
    p.add_argument("--bundle", default=None, help="also check this bundle (artifacts, engines "
                                                  "vs this GPU, the backend 'auto' picks)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-devices", action="store_true", help="skip probing cameras/microphones")


def run(args) -> int:
    import json

    from affedge.sdk.doctor import collect, format_report

    rep = collect(bundle=args.bundle, devices=not args.no_devices)
    print(json.dumps(rep, indent=2, default=str) if args.json else format_report(rep))
    return 0

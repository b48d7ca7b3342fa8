"""Long fuzz run of the WAV and bundle readers (the targets of ``tests/test_fuzz.py``).

    python benchmarks/fuzz_long.py --minutes 3 [--json out.json]

Each hypothesis target of tests/test_fuzz.py is run in batches (generation only, no shrinking,
fresh random seeds) round-robin until the time is up. A batch that finds a property violation
(an undocumented exception, a hang, a malformed accepted result) is recorded with its exception
type and message, and the run goes on. Prints examples per target, outcome counts (what the
readers answered) and the distinct failures.
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

TARGETS = (
    "test_wav_random_bytes",
    "test_wav_bit_flips_and_truncations",
    "test_wav_structured_header_mutations",
    "test_random_json_manifests",
    "test_valid_manifest_mutations",
    "test_random_bytes_as_bundle_file",
    "test_artifact_bit_flips_in_directory_bundle",
    "test_zipped_bundle_bit_flips_and_truncations",
)


def _load_fuzz_module(batch: int):
    os.environ["AFFEDGE_FUZZ_EXAMPLES"] = str(batch)
    os.environ["AFFEDGE_FUZZ_NO_SHRINK"] = "1"
    spec = importlib.util.spec_from_file_location("affedge_test_fuzz", ROOT / "tests" / "test_fuzz.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _zip_round(mod, rng, failures, failure_examples, n: int = 200) -> int:
    """``n`` bit-flipped / truncated copies of the tiny zipped bundle through check_bundle;
    every escaped exception is recorded (hypothesis would stop a batch at the first)."""
    data = mod.TINY_ZIP.read_bytes()
    path = mod.WORK / "fuzz_long.zip"
    name = "zip_bit_flips_plain_loop"
    for _ in range(n):
        b = bytearray(data)
        if rng.random() < 0.2:
            b = b[: int(rng.integers(0, len(b)))]
        else:
            for _ in range(int(rng.integers(1, 9))):
                b[int(rng.integers(0, len(b)))] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(b))
        try:
            mod.check_bundle(path)
        except Exception as exc:  # noqa: BLE001  (a finding)
            key = type(exc).__name__
            failures[name][key] += 1
            failure_examples[name].setdefault(key, str(exc)[:300])
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=200, help="examples per hypothesis call")
    ap.add_argument("--json", default=None)
    ap.add_argument("--seed", type=int, default=0, help="seed of the plain zip mutation loop")
    args = ap.parse_args(argv)

    mod = _load_fuzz_module(args.batch)
    tests = {name: getattr(mod, name) for name in TARGETS}  # hypothesis-wrapped callables
    examples = collections.Counter()
    seconds = collections.Counter()
    failures: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failure_examples: dict[str, dict[str, str]] = collections.defaultdict(dict)
    rng = np.random.default_rng(args.seed)
    t_end = time.monotonic() + 60 * args.minutes
    t0 = time.monotonic()
    rounds = 0
    while time.monotonic() < t_end:
        rounds += 1
        for name, test in tests.items():
            if time.monotonic() >= t_end:
                break
            before = sum(mod.OUTCOMES.values())
            t = time.monotonic()
            try:
                test()
            except BaseException as exc:  # noqa: BLE001  (a finding: record it and go on)
                if isinstance(exc, KeyboardInterrupt):
                    raise
                cause = exc
                while getattr(cause, "__cause__", None) is not None:
                    cause = cause.__cause__
                key = type(cause).__name__
                failures[name][key] += 1
                failure_examples[name].setdefault(key, str(cause)[:300])
            seconds[name] += time.monotonic() - t
            # examples = reader calls made (each check_* call counts one outcome)
            examples[name] += sum(mod.OUTCOMES.values()) - before
        if time.monotonic() < t_end:  # zipped-bundle mutations without stopping at a finding
            t = time.monotonic()
            n = _zip_round(mod, rng, failures, failure_examples)
            examples["zip_bit_flips_plain_loop"] += n
            seconds["zip_bit_flips_plain_loop"] += time.monotonic() - t
    wall = time.monotonic() - t0
    result = {
        "minutes": wall / 60,
        "rounds": rounds,
        "examples_total": sum(examples.values()),
        "examples": dict(examples),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "outcomes": dict(sorted(mod.OUTCOMES.items())),
        "failing_batches": {k: dict(v) for k, v in failures.items()},
        "failure_examples": {k: dict(v) for k, v in failure_examples.items()},
    }
    print(f"fuzzed for {wall / 60:.1f} min, {result['examples_total']} reader calls")
    for name in (*TARGETS, "zip_bit_flips_plain_loop"):
        f = dict(failures.get(name, {}))
        print(f"  {name:48s} {examples[name]:8d} calls  {seconds[name]:7.1f} s  "
              f"{'failures: ' + str(f) if f else 'ok'}")
    print("outcomes:", json.dumps(result["outcomes"]))
    for name, ex in result["failure_examples"].items():
        for k, msg in ex.items():
            print(f"  FINDING {name}: {k}: {msg}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())

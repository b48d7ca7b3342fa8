"""Long fuzz run of the WAV and bundle readers (the targets of ``tests/test_fuzz.py``) and of the
manifest's meaning (the manifest-semantics fuzzer).

    python benchmarks/fuzz_long.py --minutes 3 [--json out.json]
    python benchmarks/fuzz_long.py --only manifest --minutes 5    # the semantics fuzzer alone

Each hypothesis target of tests/test_fuzz.py is run in batches (generation only, no shrinking,
fresh random seeds) round-robin until the time is up. A batch that finds a property violation
(an undocumented exception, a hang, a malformed accepted result) is recorded with its exception
type and message, and the run goes on. Prints examples per target, outcome counts (what the
readers answered) and the distinct failures.

The manifest-semantics fuzzer edits a copy of the demo bundle's manifest (random leaves set to
random or nearby values, keys removed or added, lists shortened, swapped or extended, and
*consistent* forgeries that change a state shape, an output list or a feature setting in every
place it appears), always with valid artifact checksums (sha256/size recomputed from the files),
then calls ``load_bundle``. An *escape* is any exception from ``load_bundle`` other than
BundleError, or a bundle that loads and then fails to build a Recognizer or to run its first
ticks (audio + two frames) with anything but a clean ``ValueError``, or yields a non-finite
prediction not marked stale. The process runs under an 8 GiB address-space limit so a forged
size that slipped through shows up as a MemoryError (an escape) instead of swapping the machine.
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


# ------------------------------------------------------------------ manifest semantics
_NAME_POOL = ("valence", "arousal", "va", "N", "W", "embedding", "frames", "audio_mfcc",
              "audio_logmel", "state_0", "state_out_0", "float16", "float32", "int64", "mfcc",
              "logmel", "vggish", "", "x")


def _random_value(rng, old):
    """A replacement for a manifest leaf: nearby (same type) half the time, else anything."""
    r = rng.random()
    if isinstance(old, bool):
        return not old if r < 0.5 else rng.choice([0, 1, None, "true"])
    if isinstance(old, (int, float)) and r < 0.5:
        x = float(old)
        cand = [x + 1, x - 1, 2 * x, x / 2, -x, 0.0, x * 1000]
        v = cand[int(rng.integers(len(cand)))]
        return int(v) if isinstance(old, int) and v == int(v) else v
    if isinstance(old, str) and r < 0.5:
        return _NAME_POOL[int(rng.integers(len(_NAME_POOL)))]
    choices = [0, -1, 1, 2, 10**9, 2**63, -(2**31), 1e-30, 1e308, float("nan"), float("inf"),
               0.5, 16000, 200000, None, "", "N", [], {}, [1], ["N", 2], True]
    return choices[int(rng.integers(len(choices)))]


def _paths(obj, path=()):
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*path, i))


def _get(obj, path):
    for k in path:
        obj = obj[k]
    return obj


def _edit_manifest(rng, m: dict) -> str:
    """Apply one random edit in place; returns its kind (for the counts)."""
    import copy as _copy

    r = rng.random()
    if r < 0.15:  # consistent state-shape forgery: inputs, outputs and streaming.states agree
        step = next(a for a in m["artifacts"] if a["name"] == "step")
        states = [i for i, s in enumerate(step["inputs"]) if s["name"].startswith("state_")]
        k = states[int(rng.integers(len(states)))]
        name = step["inputs"][k]["name"]
        dims = [int(rng.choice([0, 1, 3, 4, 5, 512, 4096, 10**5, 10**7]))
                for _ in range(int(rng.integers(1, 4)))]
        shape = ["N", *dims]
        step["inputs"][k]["shape"] = shape
        for o in step["outputs"]:
            if o["name"] == "state_out_" + name[len("state_"):]:
                o["shape"] = shape
        for s in m.get("streaming", {}).get("states", []):
            if s.get("name") == name:
                s["shape"] = shape
        return "consistent:state_shape"
    if r < 0.25:  # consistent output-list forgery
        outs = [["arousal", "valence"], ["valence"], ["valence", "arousal", "dominance"],
                ["valence", "valence"], []][int(rng.integers(5))]
        m["outputs"] = list(outs)
        m["model"]["outputs"] = list(outs)
        return "consistent:outputs"
    if r < 0.45:  # a feature / model number set to a random value of its own kind
        sec = "features" if rng.random() < 0.7 else "model"
        keys = [k for k, v in m[sec].items() if isinstance(v, (int, float))
                and not isinstance(v, bool)]
        k = keys[int(rng.integers(len(keys)))]
        old = m[sec][k]
        v = float(rng.choice([0, 1, 2, 7, 100, 8000, 22050, 44100, 1e5, -1])) * \
            (1 if rng.random() < 0.7 else float(rng.random()))
        m[sec][k] = int(v) if isinstance(old, int) else v
        if k in ("crop_size",):  # keep the two copies consistent half the time
            other = "model" if sec == "features" else "features"
            if rng.random() < 0.5:
                m[other][k] = m[sec][k]
        return f"setting:{sec}"
    paths = [p for p, _ in _paths(m) if p and p[0] != "artifacts" or len(p) > 2]
    p = paths[int(rng.integers(len(paths)))]
    parent, key = _get(m, p[:-1]), p[-1]
    old = parent[key]
    r = rng.random()
    if isinstance(old, list) and old and r < 0.5:
        op = int(rng.integers(4))
        if op == 0:
            old.pop(int(rng.integers(len(old))))
        elif op == 1:
            old.append(_copy.deepcopy(old[int(rng.integers(len(old)))]))
        elif op == 2 and len(old) > 1:
            i, j = rng.choice(len(old), 2, replace=False)
            old[i], old[j] = old[j], old[i]
        else:
            old.reverse()
        return "list"
    if isinstance(old, dict) and old and r < 0.5:
        ks = list(old)
        if rng.random() < 0.6:
            old.pop(ks[int(rng.integers(len(ks)))])
        else:
            old["x" + str(int(rng.integers(100)))] = _random_value(rng, 0)
        return "dict"
    parent[key] = _random_value(rng, old)
    return "leaf"


class ManifestFuzzer:
    """Random semantic edits of the demo bundle's manifest with valid checksums (module doc)."""

    def __init__(self, seed: int):
        import shutil
        import tempfile

        from affedge.sdk.recognizer import DEMO_BUNDLE

        self.rng = np.random.default_rng(seed)
        self.work = Path(tempfile.mkdtemp(prefix="affedge-manifest-fuzz-")) / "bundle"
        shutil.copytree(DEMO_BUNDLE, self.work)
        self.original = json.loads((self.work / "manifest.json").read_text())
        self.true = {a["file"]: (a["sha256"], a["size"]) for a in self.original["artifacts"]}
        self.counts: collections.Counter = collections.Counter()
        self.refusals: collections.Counter = collections.Counter()
        self.escapes: dict[str, str] = {}
        self.frame = np.full((120, 160, 3), 90, np.uint8)

    def _escape(self, stage: str, exc: BaseException) -> None:
        key = f"{stage}:{type(exc).__name__}"
        self.counts["escapes"] += 1
        self.escapes.setdefault(key, str(exc)[:300])

    def one(self) -> None:
        import copy as _copy

        from affedge.bundle import BundleError, load_bundle

        m = _copy.deepcopy(self.original)
        for _ in range(int(self.rng.integers(1, 4))):
            try:
                self.counts["edit:" + _edit_manifest(self.rng, m)] += 1
            except (KeyError, IndexError, TypeError, AttributeError, ValueError):
                self.counts["edit:not-applicable"] += 1
        for a in m.get("artifacts", []) if isinstance(m.get("artifacts"), list) else []:
            if isinstance(a, dict) and isinstance(a.get("file"), str) and a["file"] in self.true:
                a["sha256"], a["size"] = self.true[a["file"]]
        (self.work / "manifest.json").write_text(json.dumps(m))
        self.counts["examples"] += 1
        try:
            b = load_bundle(self.work)
        except BundleError as exc:
            self.counts["refused (BundleError)"] += 1
            import re

            hit = re.search(r"manifest\.json: (.+?)(?::|$)", str(exc))
            field = hit.group(1) if hit else str(exc).split(": ", 1)[-1]
            self.refusals[re.sub(r"\[\d+\]", "[i]", field)[:60]] += 1
            return
        except Exception as exc:  # noqa: BLE001  (an escape)
            self._escape("load_bundle", exc)
            return
        self.counts["loaded"] += 1
        self._tick(b)

    def _tick(self, b) -> None:
        from affedge.sdk.recognizer import Recognizer

        try:
            rec = Recognizer(b, backend="cpu")
        except ValueError as exc:  # a clean, documented refusal (e.g. the engine's checks)
            self.counts["loaded, Recognizer refused (ValueError)"] += 1
            self.escapes.setdefault(f"(clean) Recognizer:{type(exc).__name__}", str(exc)[:200])
            return
        except Exception as exc:  # noqa: BLE001
            self._escape("Recognizer", exc)
            return
        try:
            sr = int(b.manifest["features"]["sample_rate"])
            rec.push_audio(np.zeros(sr // 2, np.float32), 0.0, sr)
            for i, t in enumerate((0.1, 0.2)):
                p = rec.push_frame(self.frame, t)
                ok = np.isfinite([p.valence, p.arousal]).all() or p.stale
                if not ok:
                    raise AssertionError(f"non-finite prediction not marked stale: {p}")
            self.counts["loaded and ticked"] += 1
        except Exception as exc:  # noqa: BLE001
            self._escape("tick", exc)
        finally:
            rec.close()

    def run(self, n: int) -> int:
        for _ in range(n):
            try:
                with _alarm(20.0):
                    self.one()
            except _Hang as exc:
                self._escape("hang", exc)
        return n

    def result(self) -> dict:
        return {"counts": dict(self.counts), "refusals_by_field": dict(
            self.refusals.most_common()), "escapes": self.escapes}


class _Hang(Exception):
    pass


class _alarm:
    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self):
        import signal

        def fire(*_):
            raise _Hang(f"example did not finish within {self.seconds} s")

        self.old = signal.signal(signal.SIGALRM, fire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        import signal

        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.old)
        return False


def _limit_memory(gib: float = 8.0) -> None:
    import resource

    lim = int(gib * (1 << 30))
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > lim:
        resource.setrlimit(resource.RLIMIT_AS, (lim, hard))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=200, help="examples per hypothesis call")
    ap.add_argument("--json", default=None)
    ap.add_argument("--seed", type=int, default=0, help="seed of the plain loops (zip, manifest)")
    ap.add_argument("--only", choices=("all", "manifest"), default="all",
                    help="manifest: run only the manifest-semantics fuzzer")
    ap.add_argument("--manifest-batch", type=int, default=40,
                    help="manifest-semantics examples per round")
    args = ap.parse_args(argv)
    _limit_memory()
    manifest_fuzz = ManifestFuzzer(args.seed)
    if args.only == "manifest":
        return _main_manifest_only(args, manifest_fuzz)

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
            except BaseException as exc:
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
        if time.monotonic() < t_end:  # manifest semantics (valid checksums, edited fields)
            t = time.monotonic()
            examples["manifest_semantics"] += manifest_fuzz.run(args.manifest_batch)
            seconds["manifest_semantics"] += time.monotonic() - t
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
        "manifest_semantics": manifest_fuzz.result(),
    }
    print(f"fuzzed for {wall / 60:.1f} min, {result['examples_total']} reader calls")
    for name in (*TARGETS, "zip_bit_flips_plain_loop", "manifest_semantics"):
        f = dict(failures.get(name, {}))
        print(f"  {name:48s} {examples[name]:8d} calls  {seconds[name]:7.1f} s  "
              f"{'failures: ' + str(f) if f else 'ok'}")
    print("outcomes:", json.dumps(result["outcomes"]))
    for name, ex in result["failure_examples"].items():
        for k, msg in ex.items():
            print(f"  FINDING {name}: {k}: {msg}")
    _print_manifest(manifest_fuzz)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if not failures and not manifest_fuzz.counts["escapes"] else 1


def _print_manifest(fz: ManifestFuzzer) -> None:
    r = fz.result()
    c = r["counts"]
    print(f"manifest semantics: {c.get('examples', 0)} edited manifests, "
          f"{c.get('refused (BundleError)', 0)} refused by load_bundle, "
          f"{c.get('loaded and ticked', 0)} loaded and ticked, "
          f"{c.get('loaded, Recognizer refused (ValueError)', 0)} loaded then refused cleanly, "
          f"{c.get('escapes', 0)} escapes")
    print("  edits:", json.dumps({k: v for k, v in sorted(c.items()) if k.startswith("edit:")}))
    print("  refusals by field:", json.dumps(dict(list(r["refusals_by_field"].items())[:25])))
    for k, msg in r["escapes"].items():
        print(f"  {'note' if k.startswith('(clean)') else 'ESCAPE'} {k}: {msg}")


def _main_manifest_only(args, fz: ManifestFuzzer) -> int:
    t0 = time.monotonic()
    t_end = t0 + 60 * args.minutes
    while time.monotonic() < t_end:
        fz.run(min(args.manifest_batch, 10))
    wall = time.monotonic() - t0
    print(f"fuzzed the manifest semantics for {wall / 60:.1f} min")
    _print_manifest(fz)
    if args.json:
        Path(args.json).write_text(json.dumps({"minutes": wall / 60, **fz.result()}, indent=2))
    return 0 if not fz.counts["escapes"] else 1


if __name__ == "__main__":
    sys.exit(main())

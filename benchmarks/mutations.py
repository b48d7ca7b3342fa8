"""Mutation check: put one small deliberate bug at a time into a copy of the repository and run the
tests that should catch it; report caught / missed.

    python benchmarks/mutations.py --list
    python benchmarks/mutations.py [--only 3,5] [--fast] [--baseline] [--json report.json]

Each mutation is one edit of one file (a text substitution that must match exactly once, or a
small function for JSON files) applied to a fresh copy of the working tree (the built
``affedge/_ringbuf*.so`` included; ``.git``, virtual environments and caches are left out).
pytest then runs the mutation's targeted tests in the copy, with ``PYTHONPATH`` pointing at it.
A mutation is *caught* when pytest fails (exit status 1), *missed* when the tests pass, and
*error* when pytest cannot run them (exit status 2-5) or times out. ``--baseline`` first runs
every targeted test set on the unmodified copy: a set that fails there makes its mutations'
results meaningless, and the report says so.

``--fast`` leaves out mutations marked slow (their tests train a model for minutes). This is a
benchmark, not part of the suite (each run copies the tree and starts pytest, which builds the
test bundle again: about a minute per mutation on the 2-core CPU before its tests run).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", ".pytest_cache",
                                ".hypothesis", "*.egg-info", "build", "dist", ".mypy_cache",
                                ".ruff_cache", "affedge_demo_out")


@dataclass(frozen=True)
class Mutation:
    title: str
    file: str
    old: str = ""
    new: str = ""
    tests: tuple[str, ...] = ()
    source: str = "issue 15"  # where the mutation comes from
    slow: bool = False
    edit: Callable[[str], str] | None = field(default=None, compare=False)

    def apply(self, text: str) -> str:
        if self.edit is not None:
            out = self.edit(text)
            if out == text:
                raise ValueError(f"{self.file}: the edit changed nothing")
            return out
        n = text.count(self.old)
        if n != 1:
            raise ValueError(f"{self.file}: the text to replace occurs {n} times (need 1):\n"
                             f"{self.old}")
        return text.replace(self.old, self.new)


def _double_logmel_std(text: str) -> str:
    """The demo manifest with every audio_norm.logmel.std entry doubled (checksums untouched)."""
    m = json.loads(text)
    std = m["audio_norm"]["logmel"]["std"]
    m["audio_norm"]["logmel"]["std"] = [2 * s for s in std] if isinstance(std, list) else 2 * std
    return json.dumps(m, indent=2) + "\n"


ENGINE = "affedge/sdk/engine.py"
TIMELINE = "affedge/sdk/audio_timeline.py"

MUTATIONS: tuple[Mutation, ...] = (
    # ---------------------------------------------------------------- the list
    Mutation("training batches with the audio zeroed", "affedge/training/trainer.py",
             "auds[k].append(_pad(torch.from_numpy(t.audio[k][a:b]), w))",
             "auds[k].append(_pad(torch.from_numpy(t.audio[k][a:b]) * 0, w))",
             ("tests/test_learning.py",), slow=True),
    Mutation("demo bundle: log-mel std doubled in manifest.json (checksums untouched)",
             "affedge/assets/demo/demo_bundle/manifest.json", edit=_double_logmel_std,
             tests=("tests/test_guards.py::test_demo_scores_near_the_readme_figure",)),
    Mutation("confidence reduced to the face score alone", ENGINE,
             "conf = float(np.clip(face * presence * af * warm, 0.0, 1.0))",
             "conf = float(np.clip(face, 0.0, 1.0))",
             ("tests/test_confidence.py",)),
    Mutation("a 37 KB per-frame leak (every tick's crops kept)", ENGINE,
             "crops = np.stack(to_encode) if to_encode else None",
             "crops = np.stack(to_encode) if to_encode else None; "
             "self.__dict__.setdefault('_kept', []).append(crops)",
             ("tests/test_leaks.py",)),
    Mutation("stale predictions for skipped live frames not emitted", "affedge/sdk/recognizer.py",
             "if prev_index is not None and frame.index > prev_index + 1:",
             "if False:",
             ("tests/test_overload.py",)),
    Mutation("sha256 checked only for ONNX artifacts", "affedge/bundle.py",
             'if digest != a["sha256"]:',
             'if a["format"] == "onnx" and digest != a["sha256"]:',
             ("tests/test_fuzz.py::test_artifact_bit_flips_in_directory_bundle",)),
    # ---------------------------------------------------------------- this round's code
    Mutation("AudioTimeline: features from 100 ms in the future", TIMELINE,
             'v = np.asarray(self._rings[k].at(t, "previous"), np.float32)',
             'v = np.asarray(self._rings[k].at(t + 0.1, "previous"), np.float32)',
             ("tests/test_engine.py::test_file_stream_equals_offline_window",),
             source="guards"),
    Mutation("AudioTimeline: gap filled one block too long", TIMELINE,
             "x = np.concatenate([np.zeros(int(round(gap * self.sample_rate)),",
             "x = np.concatenate([np.zeros(int(round(gap * self.sample_rate)) + self._block,",
             ("tests/test_bad_input.py::test_audio_timestamps_jumping_back_or_forward",),
             source="guards"),
    Mutation("FallbackBackend: a failed call is not retried on the next candidate",
             "affedge/sdk/backends/fallback.py",
             "                self.current = nxt\n",
             "                self.current = nxt\n                raise\n",
             ("tests/test_faults.py::test_recognizer_fallback_api",
              "tests/test_faults.py::test_backend_failure_mid_stream_then_fallback_keeps_the_stream"),
             source="guards"),
    Mutation("detector registry: make_detector drops its options (min_size ignored)",
             "affedge/features/detectors/base.py",
             "    return cls(**options)", "    return cls()",
             ("tests/test_detectors.py",), source="guards"),
    Mutation("detector registry: DEFAULT_DETECTOR changed", "affedge/features/detectors/base.py",
             'DEFAULT_DETECTOR = "blazeface-short"', 'DEFAULT_DETECTOR = "haar"',
             ("tests/test_detectors.py", "tests/test_guards.py::test_registry_defaults_in_use"),
             source="guards"),
    Mutation("VAD registry: default changed to the energy VAD", "affedge/features/vad/registry.py",
             'DEFAULT_VAD = "silero"', 'DEFAULT_VAD = "energy"',
             ("tests/test_silero_vad.py", "tests/test_guards.py::test_registry_defaults_in_use"),
             source="guards"),
    Mutation("sinks: NaN written as NaN", "affedge/sdk/sinks/base.py",
             "return f if math.isfinite(f) else None", "return f",
             ("tests/test_sinks.py",), source="guards"),
    Mutation("sinks: rows not flushed as they are written", "affedge/sdk/sinks/files.py",
             "            self._fh.write(text)\n            self._fh.flush()\n",
             "            self._fh.write(text)\n",
             ("tests/test_sinks.py",), source="guards"),
    Mutation("formats table: ONNX Runtime CPU moved after torch in the auto order",
             "affedge/formats.py",
             'Runner("ort-cpu", _ORT, (("provider", "cpu"),), _ORT_OPTS, auto=3,',
             'Runner("ort-cpu", _ORT, (("provider", "cpu"),), _ORT_OPTS, auto=7,',
             ("tests/test_backends.py::test_auto_selects_onnxruntime_cpu_with_reasons",),
             source="guards"),
)


def copy_tree(dst: Path) -> Path:
    """A copy of the working tree (with the built extension) at ``dst``."""
    shutil.copytree(ROOT, dst, ignore=IGNORE, symlinks=True)
    if not list((dst / "affedge").glob("_ringbuf*.so")):
        raise SystemExit("affedge/_ringbuf*.so is not built in this checkout; build it first")
    return dst


def run_tests(tree: Path, tests, timeout: float) -> tuple[int | None, float, str]:
    """pytest over ``tests`` in ``tree`` -> (exit status or None on timeout, seconds, tail)."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True,
                           timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        return None, time.monotonic() - t0, out[-1500:]
    tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-6:])
    return r.returncode, time.monotonic() - t0, tail


def verdict(rc: int | None) -> str:
    if rc is None:
        return "error (timeout)"
    if rc == 1:
        return "caught"
    if rc == 0:
        return "MISSED"
    return f"error (pytest exit {rc})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--only", default="", help="comma-separated mutation numbers (from --list)")
    ap.add_argument("--fast", action="store_true", help="leave out the slow mutations")
    ap.add_argument("--baseline", action="store_true",
                    help="first run every targeted test set on the unmodified copy")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per pytest run")
    ap.add_argument("--json", default=None, help="write the report here")
    args = ap.parse_args(argv)

    chosen = list(enumerate(MUTATIONS, 1))
    if args.only:
        want = {int(x) for x in args.only.split(",") if x.strip()}
        chosen = [(i, m) for i, m in chosen if i in want]
    if args.fast:
        chosen = [(i, m) for i, m in chosen if not m.slow]
    if args.list:
        for i, m in enumerate(MUTATIONS, 1):
            print(f"{i:2d}. [{m.source}{', slow' if m.slow else ''}] {m.title}\n"
                  f"    {m.file}  ->  {' '.join(m.tests)}")
        return 0
    # every mutation must still apply to this checkout (an edit of the code may move the text)
    for i, m in chosen:
        m.apply((ROOT / m.file).read_text(encoding="utf-8"))

    report = {"root": str(ROOT), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "baseline": {}, "mutations": []}
    with tempfile.TemporaryDirectory(prefix="affedge-mut-") as tmp:
        if args.baseline:
            base = copy_tree(Path(tmp) / "baseline")
            for tests in sorted({m.tests for _, m in chosen}):
                rc, secs, tail = run_tests(base, tests, args.timeout)
                report["baseline"][" ".join(tests)] = {"exit": rc, "seconds": round(secs, 1)}
                print(f"baseline {'pass' if rc == 0 else 'FAIL'} ({secs:.0f} s): "
                      f"{' '.join(tests)}" + ("" if rc == 0 else "\n" + tail), flush=True)
            shutil.rmtree(base)
        for i, m in chosen:
            tree = copy_tree(Path(tmp) / f"m{i}")
            path = tree / m.file
            path.write_text(m.apply(path.read_text(encoding="utf-8")), encoding="utf-8")
            rc, secs, tail = run_tests(tree, m.tests, args.timeout)
            v = verdict(rc)
            base = report["baseline"].get(" ".join(m.tests))
            if base is not None and base["exit"] != 0:
                v += " (baseline fails: meaningless)"
            row = {"n": i, "title": m.title, "file": m.file, "source": m.source,
                   "tests": list(m.tests), "verdict": v, "exit": rc, "seconds": round(secs, 1)}
            report["mutations"].append(row)
            print(f"{i:2d}. {v:8s} {secs:6.0f} s  {m.title}", flush=True)
            if v != "caught":
                print("    " + tail.replace("\n", "\n    "), flush=True)
            shutil.rmtree(tree)
    rows = report["mutations"]
    caught = sum(r["verdict"] == "caught" for r in rows)
    report["summary"] = {"caught": caught, "total": len(rows)}
    print(f"\n{caught}/{len(rows)} caught")
    print("| # | mutation | verdict | s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['title']} | {r['verdict']} | {r['seconds']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Compile the pure C++ ring buffer harnesses (cpp_ext/tests/*.cpp, same header as the Python
extension) with AddressSanitizer + UndefinedBehaviorSanitizer and, separately, with
ThreadSanitizer, run them, and require a clean exit.

ThreadSanitizer checks the head/tail acquire/release protocol; it does not model standalone
fences (the seqlock validation), which is why the payload itself is accessed with relaxed
atomics: concurrent overwrites are then well-defined and not reported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "cpp_ext" / "tests"
CXX = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("g++")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++) on PATH to build the harness"),
]

SANITIZERS = {
    "asan_ubsan": [
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
        "-fno-omit-frame-pointer",
    ],
    "tsan": ["-fsanitize=thread", "-Wno-tsan"],
}
# (harness, arguments for a run that takes a few seconds at most under the sanitizer)
HARNESSES = {
    "model_test": ["12000", "99"],
    "stress_test": ["300000", "128", "3"],
}
ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:abort_on_error=0",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    "TSAN_OPTIONS": "halt_on_error=1:exitcode=66",
}


def build(harness: str, flags: list[str], out_dir: Path) -> Path:
    exe = out_dir / harness
    cmd = [
        CXX,
        "-std=c++17",
        "-O1",
        "-g",
        "-pthread",
        *flags,
        str(SRC / f"{harness}.cpp"),
        "-o",
        str(exe),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)
    if res.returncode != 0 and "sanitize" in res.stderr and "cannot find" in res.stderr:
        pytest.skip(f"the compiler lacks the sanitizer runtime: {res.stderr.strip()[:200]}")
    assert res.returncode == 0, f"compile failed:\n{' '.join(cmd)}\n{res.stderr}"
    return exe


def run(exe: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, **ENV}
    res = subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=240, env=env, check=False
    )
    if "ThreadSanitizer: unexpected memory mapping" in res.stderr and shutil.which("setarch"):
        # Some kernels randomise mmap more than older TSan runtimes accept: retry without ASLR.
        res = subprocess.run(
            ["setarch", "-R", str(exe), *args],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
            check=False,
        )
        if "unexpected memory mapping" in res.stderr:
            pytest.skip("ThreadSanitizer cannot run on this kernel (mmap randomisation)")
    return res


@pytest.mark.parametrize("sanitizer", list(SANITIZERS))
@pytest.mark.parametrize("harness", list(HARNESSES))
def test_harness_clean_under_sanitizer(harness, sanitizer, tmp_path):
    exe = build(harness, SANITIZERS[sanitizer], tmp_path)
    res = run(exe, HARNESSES[harness])
    report = f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr[-4000:]}"
    assert res.returncode == 0, report
    assert "OK" in res.stdout, report
    for marker in (
        "ERROR: AddressSanitizer",
        "runtime error:",
        "WARNING: ThreadSanitizer",
        "ERROR: LeakSanitizer",
    ):
        assert marker not in res.stderr, report

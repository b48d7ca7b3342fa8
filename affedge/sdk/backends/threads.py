"""The one thread policy every backend applies: intra-op thread count and spinning.

Policy (measured with ``benchmarks/bench_threads.py``; table in benchmarks/README.md,
"Thread policy"):

* **2 intra-op threads (at most the CPUs this process may use), spinning off.** Measured on a
  shared 2-vCPU AMD EPYC (3 runs, ONNX Runtime 1.32, IR-50 and mobile encoders, batch 1): with
  a CPU hog on the other core, 2 non-spinning threads took 0.19-0.74x the time of 1 thread; on
  the machine without the hog they took 1.06-1.36x. Taking the variant whose *worse* load
  state is fastest (a kiosk's other core is busy with face detection, audio and the OS
  whenever it matters), 2 non-spinning threads win; 1 thread lost 2.0-2.2x to the hog.
  Caveat: that machine was shared (load average 9-13 throughout), so "without the hog" was
  not idle; re-measure on a quiet kiosk before trusting the exact ratios.
* **No spinning**, ever: 2 *spinning* threads (ONNX Runtime's default on 2 cores, the old
  affedge default) were the slowest variant on the machine without the hog (1.85-2.13x of 1
  thread) and 1.0-1.5x of 1 thread under the hog (1.8-7x of 2 non-spinning threads).
  Spinning pool workers busy-wait between ops and steal the core the concurrent work needs.
  (``session.intra_op.allow_spinning = 0``.)
* **Override** with the backends' ``intra_op_threads`` option (the same name for every backend;
  ``affedge ... --threads N`` passes it), or the environment variable ``AFFEDGE_THREADS``; the
  option wins over the variable, the variable over the default. Use it on a dedicated machine
  with idle cores (e.g. ``AFFEDGE_THREADS=4`` on a 4-core kiosk running nothing else).

* **BLAS: 1 thread** for numpy's matrix products (the audio features' filterbank and DCT
  products, a few rows at a time). OpenBLAS's default on 2 cores is a second worker that
  busy-waits after each product: on the 2-vCPU Xeon (AMX), 4 file sources through the serve
  hub without the model calls ran at 290 frames/s with it and 401-408 with one BLAS thread,
  and that worker alone used 0.9 CPU-seconds of a 1.7 s run (benchmarks/README.md, the
  ``affedge serve`` section, 2026-12-01). :func:`limit_blas_threads` sets it process-wide through threadpoolctl
  when the runtime's first audio timeline is made, unless the user chose already
  (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``) or sets
  ``AFFEDGE_BLAS_THREADS`` (a count, or ``keep`` to leave BLAS alone).

How each library receives the policy:

* ONNX Runtime: ``SessionOptions.intra_op_num_threads``, ``inter_op_num_threads = 1``
  (sequential executor) and ``session.intra_op.allow_spinning`` -- per session.
* OpenVINO: ``INFERENCE_NUM_THREADS``, ``NUM_STREAMS = 1``, ``PERFORMANCE_HINT = LATENCY`` and no
  CPU pinning (pinned threads cannot move away from a busy core) -- per compiled model.
* torch: ``torch.set_num_threads`` -- process-wide (torch has no per-module setting); the OpenMP
  wait policy can only be set before torch is imported, so the torch backends' import sets
  ``OMP_WAIT_POLICY=PASSIVE`` when torch is not loaded yet and the environment does not set it
  (``torchscript_backend.import_torch``). With OpenMP's default (spinning) and a busy other
  core, ``affedge run --backend torchscript`` (2 threads) ran at 3 fps, p50 705 ms; with
  PASSIVE 42 fps; with 1 thread 69 fps (a new user's trial, 2-core AMD EPYC, 2026-12-01).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

#: environment variable overriding the default thread count (an integer >= 1)
ENV_VAR = "AFFEDGE_THREADS"
#: measured default, capped at the usable CPUs (benchmarks/README.md, "Thread policy")
DEFAULT_THREADS = 2
#: measured default: pool workers sleep instead of busy-waiting between ops
DEFAULT_SPINNING = False


@dataclass(frozen=True)
class ThreadPolicy:
    """What a backend applies: ``threads`` intra-op threads, ``spinning`` busy-wait on/off, and
    where the thread count came from ("option", "AFFEDGE_THREADS" or "default")."""

    threads: int
    spinning: bool
    source: str

    def describe(self) -> str:
        return (f"{self.threads} intra-op thread{'s' if self.threads != 1 else ''}, spinning "
                f"{'on' if self.spinning else 'off'} ({self.source})")


def default_threads() -> int:
    """:data:`DEFAULT_THREADS`, but never more than the CPUs this process may run on."""
    return max(1, min(DEFAULT_THREADS, usable_cpus()))


def check_thread_count(value, where: str) -> int:
    """``value`` as a thread count (>= 1, at most OVERSUBSCRIPTION x the usable CPUs, and
    at least 8), or ValueError naming ``where`` (the option or variable it came from)."""
    try:
        n = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ValueError(f"{where} must be an integer >= 1, got {value!r}") from None
    if isinstance(value, bool) or n < 1:
        raise ValueError(f"{where} must be an integer >= 1, got {value!r}")
    cap = max(8, OVERSUBSCRIPTION * usable_cpus())
    if n > cap:
        raise ValueError(f"{where}={n} is more than {OVERSUBSCRIPTION}x the {usable_cpus()} "
                         f"CPUs this process may use (at most {cap}); more threads than that "
                         f"only add contention")
    return n


#: intra-op threads beyond this many per usable CPU are refused (they can only contend)
OVERSUBSCRIPTION = 4


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; the CPU count where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def thread_policy(intra_op_threads: int | None = None,
                  spinning: bool | None = None) -> ThreadPolicy:
    """The policy for one backend: the explicit option, else ``$AFFEDGE_THREADS``, else the
    measured default; ``spinning`` None means the default (off)."""
    if intra_op_threads is not None:
        n, src = check_thread_count(intra_op_threads, "intra_op_threads"), "option"
    elif os.environ.get(ENV_VAR, "").strip():
        n, src = check_thread_count(os.environ[ENV_VAR], ENV_VAR), ENV_VAR
    else:
        n, src = default_threads(), "default"
    spin = DEFAULT_SPINNING if spinning is None else bool(spinning)
    return ThreadPolicy(n, spin, src)


def apply_to_ort(so, policy: ThreadPolicy) -> None:
    """Set an ``onnxruntime.SessionOptions`` to the policy."""
    so.intra_op_num_threads = policy.threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning",
                                "1" if policy.spinning else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning",
                                "1" if policy.spinning else "0")


def openvino_config(policy: ThreadPolicy) -> dict[str, str]:
    """OpenVINO CPU compile properties for the policy (string keys and values, accepted by every
    OpenVINO >= 2024 ``compile_model``)."""
    return {"INFERENCE_NUM_THREADS": str(policy.threads), "NUM_STREAMS": "1",
            "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": "NO"}


def apply_to_torch(torch, policy: ThreadPolicy) -> None:
    """Set torch's (process-wide) intra-op thread count to the policy's."""
    if torch.get_num_threads() != policy.threads:
        torch.set_num_threads(policy.threads)


#: environment variable for the BLAS threads of the runtime's numpy products ("keep": untouched)
BLAS_ENV_VAR = "AFFEDGE_BLAS_THREADS"
#: variables by which a user already chose the BLAS threads (affedge then leaves BLAS alone)
BLAS_USER_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_blas_lock = threading.Lock()
_blas_applied: str | None = None


def limit_blas_threads() -> str:
    """Once per process: numpy's BLAS to 1 thread (module docstring), or to
    ``$AFFEDGE_BLAS_THREADS``; left alone when that is ``keep``, when the user set one of
    :data:`BLAS_USER_VARS`, or when threadpoolctl is missing. Returns what was done (one line,
    for ``stats()``-style reports)."""
    global _blas_applied
    with _blas_lock:
        if _blas_applied is not None:
            return _blas_applied
        want = os.environ.get(BLAS_ENV_VAR, "").strip()
        chosen = [v for v in BLAS_USER_VARS if os.environ.get(v, "").strip()]
        if want.lower() == "keep":
            _blas_applied = f"left alone ({BLAS_ENV_VAR}=keep)"
        elif chosen and not want:
            _blas_applied = f"left alone ({chosen[0]} is set)"
        else:
            try:
                n = check_thread_count(want, BLAS_ENV_VAR) if want else 1
            except ValueError as exc:
                raise ValueError(f"{exc} (or 'keep': leave numpy's BLAS threads alone)") \
                    from None
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:
                _blas_applied = "left alone (threadpoolctl is not installed)"
            else:
                threadpool_limits(limits=n, user_api="blas")
                _blas_applied = f"{n} thread{'s' if n != 1 else ''}" + \
                    (f" ({BLAS_ENV_VAR})" if want else "")
        return _blas_applied

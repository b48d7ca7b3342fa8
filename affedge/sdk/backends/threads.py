"""The one thread policy every backend applies: intra-op thread count and spinning.

Policy (measured with ``benchmarks/bench_threads.py``; numbers in benchmarks/README.md,
"Thread policy"):

* **1 intra-op thread by default.** The runtime already keeps a second core busy (the
  ``async_detect`` worker, audio capture, the caller's own work), and an edge box is shared.
  Two ONNX Runtime threads bought at most ~1.2x on an idle 2-core machine and lost up to
  ~1.9x as soon as another process held the second core; one thread lost the least under the
  same hog. One thread is the default that holds under load.
* **No spinning.** When more threads are asked for, ONNX Runtime's pool workers do not
  busy-wait between ops (``session.intra_op.allow_spinning = 0``): spinning threads steal the
  core a concurrent job needs and then wait for it, which is what collapsed under load.
* **Override** with the backends' ``intra_op_threads`` option (the same name for every backend;
  ``affedge ... --threads N`` passes it), or the environment variable ``AFFEDGE_THREADS``; the
  option wins over the variable, the variable over the default. Use it on a dedicated machine
  with idle cores (e.g. ``AFFEDGE_THREADS=4`` on a 4-core kiosk running nothing else).

How each library receives the policy:

* ONNX Runtime: ``SessionOptions.intra_op_num_threads``, ``inter_op_num_threads = 1``
  (sequential executor) and ``session.intra_op.allow_spinning`` -- per session.
* OpenVINO: ``INFERENCE_NUM_THREADS``, ``NUM_STREAMS = 1``, ``PERFORMANCE_HINT = LATENCY`` and no
  CPU pinning (pinned threads cannot move away from a busy core) -- per compiled model.
* torch: ``torch.set_num_threads`` -- process-wide (torch has no per-module setting); the OpenMP
  wait policy can only be set before torch is imported (``OMP_WAIT_POLICY=PASSIVE``), so it is
  not changed here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

#: environment variable overriding the default thread count (an integer >= 1)
ENV_VAR = "AFFEDGE_THREADS"
#: measured default (benchmarks/README.md, "Thread policy")
DEFAULT_THREADS = 1
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


def _positive_int(value, where: str) -> int:
    try:
        n = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ValueError(f"{where} must be an integer >= 1, got {value!r}") from None
    if isinstance(value, bool) or n < 1:
        raise ValueError(f"{where} must be an integer >= 1, got {value!r}")
    return n


def thread_policy(intra_op_threads: int | None = None,
                  spinning: bool | None = None) -> ThreadPolicy:
    """The policy for one backend: the explicit option, else ``$AFFEDGE_THREADS``, else the
    measured default; ``spinning`` None means the default (off)."""
    if intra_op_threads is not None:
        n, src = _positive_int(intra_op_threads, "intra_op_threads"), "option"
    elif os.environ.get(ENV_VAR, "").strip():
        n, src = _positive_int(os.environ[ENV_VAR], ENV_VAR), ENV_VAR
    else:
        n, src = DEFAULT_THREADS, "default"
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

"""What the CPU offers for fp32/bf16/int8 arithmetic, read from /proc/cpuinfo (Linux)."""
from __future__ import annotations

#: the SIMD extensions that matter for fp32/bf16/int8 GEMMs on x86
X86_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
             "amx_bf16", "amx_int8")
#: flags that mean bf16 arithmetic in hardware: x86 AVX-512 BF16 / AMX, Arm's BF16 extension
#: ("bf16" in the "Features" line of an ARMv8.6+ core)
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def _cpuinfo_flags() -> set[str] | None:
    """The first CPU's flags ("flags" on x86, "Features" on Arm), or None when unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo; else what ``platform`` says)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_line() -> str:
    """One line for reports: model, usable/logical cores, the SIMD flags that matter, load."""
    import os

    from affedge.sdk.backends.threads import usable_cpus

    try:
        load = "load %.1f %.1f %.1f" % os.getloadavg()
    except OSError:  # not on Linux/macOS
        load = "load unknown"
    flags = ", ".join(cpu_flags()) or "none of " + "/".join(X86_FLAGS[:3])
    return (f"{cpu_model()}; {usable_cpus()} usable of {os.cpu_count()} logical cores; "
            f"{flags}; {load}")


def cpu_flags() -> list[str]:
    """The x86 SIMD extensions of :data:`X86_FLAGS` this CPU has ([] when unknown)."""
    flags = _cpuinfo_flags() or set()
    return [f for f in X86_FLAGS if f in flags]


def cpu_has_bf16() -> bool | None:
    """True when the CPU computes bf16 in hardware, False when it does not (torch would
    emulate it, many times slower than fp32), None when this cannot be told here."""
    flags = _cpuinfo_flags()
    if flags is None:
        return None
    return any(f in flags for f in BF16_FLAGS)

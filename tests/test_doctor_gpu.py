"""`affedge doctor` finds NVIDIA GPUs without nvidia-smi (JetPack has none): the CUDA driver
API through ctypes, torch.cuda, and /etc/nv_tegra_release for the Jetson release."""
from __future__ import annotations

from affedge.sdk.doctor import collect, cuda_devices, format_report, tegra_release

# the first line of /etc/nv_tegra_release on a JetPack 6.2 (L4T 36.4.3) Orin
ORIN = ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
        "DATE: Wed Jan  8 01:49:37 UTC 2025\n# KERNEL_VARIANT: oot\n")


def test_tegra_release_parsed(tmp_path):
    f = tmp_path / "nv_tegra_release"
    f.write_text(ORIN)
    assert tegra_release(f) == {"l4t": "36.4.3", "board": "generic", "jetpack": "6.x"}
    f.write_text("# R35 (release), REVISION: 5.0, GCID: 1, BOARD: t186ref, EABI: aarch64\n")
    assert tegra_release(f)["jetpack"] == "5.x"
    f.write_text("something else\n")
    assert tegra_release(f) == {"l4t": None, "raw": "something else"}
    assert tegra_release(tmp_path / "absent") is None


def test_cuda_devices_probe_order_and_jetson_hint(tmp_path):
    f = tmp_path / "nv_tegra_release"
    f.write_text(ORIN)

    def no_driver():
        raise OSError("CUDA driver library not found (libcuda.so.1: cannot open shared "
                      "object file: No such file or directory)")

    def orin():
        return [{"gpu_name": "Orin", "compute_capability": "8.7", "memory_mib": 62841}]

    got = cuda_devices(f, probes=(("cuda-driver", no_driver), ("torch", orin)))
    assert got["source"] == "torch" and got["devices"][0]["compute_capability"] == "8.7"
    assert got["tegra"]["l4t"] == "36.4.3" and "note" not in got
    none = cuda_devices(f, probes=(("cuda-driver", no_driver), ("torch", list)))
    assert none["devices"] == [] and "CUDA driver library not found" in none["note"]
    assert "this is a Jetson (L4T 36.4.3)" in none["note"] and "'video' group" in none["note"]
    # the report's line keeps each probe's reason and drops the loader's details (--json has them)
    assert none["summary"].startswith("no CUDA GPU found: cuda-driver: CUDA driver library not "
                                      "found; torch: no devices")
    assert "libcuda.so.1" in none["note"] and "libcuda.so.1" not in none["summary"]
    # this machine: whatever it has, the real probes answer without raising
    here = cuda_devices(tmp_path / "absent")
    assert here["tegra"] is None and isinstance(here["devices"], list)


def test_report_has_a_gpu_line():
    text = format_report(collect(devices=False))
    assert "\ngpu: " in text

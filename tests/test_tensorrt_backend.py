"""The TensorRT backend, device-resident step state and `affedge build-engines`, on engines
built from the demo bundle's real ONNX graphs by a fake TensorRT (10.x and 11.x surfaces) whose
engines execute through the raw device addresses the backend binds (fake device = host
memory). ONNX Runtime CPU on the same graphs is the reference."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from fake_tensorrt import FAKE_GPU, HostDevice, install

from affedge.bundle import load_bundle
from affedge.sdk.backends.base import BackendUnavailable
from affedge.sdk.backends.onnxruntime_backend import OnnxRuntimeBackend

DEMO = Path(__file__).parents[1] / "affedge" / "assets" / "demo" / "demo_bundle"
MAX_FACES = 4


@pytest.fixture(scope="module", params=["10.3.0", "11.1.0"])
def built(request, tmp_path_factory):
    """(fake tensorrt module, bundle dir with fp32 engines, build result)."""
    from affedge.export.engines import build_engines

    with pytest.MonkeyPatch.context() as mp:
        trt = install(mp, request.param)
        out = tmp_path_factory.mktemp("eng") / "bundle"
        res = build_engines(DEMO, out=out, precision="fp32", max_faces=MAX_FACES,
                            models=("encoder", "step", "window"), gpu=FAKE_GPU,
                            device=HostDevice(),
                            timing_cache=tmp_path_factory.mktemp("tc") / "t.cache")
        yield trt, out, res


@pytest.fixture
def backend(built, monkeypatch):
    from affedge.sdk.backends.tensorrt_backend import TensorRTBackend

    trt, out, _ = built
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", trt)
    be = TensorRTBackend(load_bundle(out), device=HostDevice())
    yield be
    be.close()


@pytest.fixture(scope="module")
def ort():
    return OnnxRuntimeBackend(load_bundle(DEMO), "cpu")


def _step_feeds(be, n, rng):
    return {s["name"]: rng.standard_normal([n if d == "N" else d for d in s["shape"]]).astype(
        np.float32) for s in be.input_specs("step")}


def test_build_engines_adds_checked_engines(built):
    trt, out, res = built
    b = load_bundle(out)  # sha256 + sizes of every artifact verified
    engines = [a for a in b.artifacts if a["format"] == "tensorrt"]
    assert {a["name"] for a in engines} == {"encoder", "step", "window"}
    for a in engines:
        assert a["tensorrt_version"] == trt.__version__ and a["gpu_name"] == FAKE_GPU["gpu_name"]
        assert a["file"] == f"{a['name']}.fp32.engine" and a["strongly_typed"]
    step = b.find("step", "tensorrt")
    assert step["max_batch"] == MAX_FACES + 1 and step["profiles"]["embedding"][2][0] == 5
    par = [p for p in b.manifest["parity"] if p["format"] == "tensorrt"]
    assert [p["status"] for p in par] == ["pass"] * 3 and res["ok"]
    assert all(p["reference"] == "onnxruntime-cpu" for p in par)
    # everything the source bundle had is still there
    assert {(a["name"], a["format"]) for a in load_bundle(DEMO).artifacts} <= {
        (a["name"], a["format"]) for a in b.artifacts}


def test_run_matches_onnxruntime(backend, ort):
    rng = np.random.default_rng(0)
    for n in (1, 3, MAX_FACES):
        x = {"frames": np.tanh(rng.standard_normal((n, 3, 40, 40))).astype(np.float32)}
        np.testing.assert_allclose(backend.run("encoder", x)["embedding"],
                                   ort.run("encoder", x)["embedding"], atol=1e-6)
    feeds = _step_feeds(backend, 5, rng)
    a, b = backend.run("step", feeds), ort.run("step", feeds)
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-5)
    w = {s["name"]: rng.standard_normal([2, 30, s["shape"][2]]).astype(np.float32)
         for s in backend.input_specs("window")}
    np.testing.assert_allclose(backend.run("window", w)["va"], ort.run("window", w)["va"],
                               atol=1e-5)


def test_buffers_allocated_once(backend):
    rng = np.random.default_rng(1)
    n0 = backend.device.allocations
    for n in (1, 2, 4, 1):
        backend.run("encoder", {"frames": rng.standard_normal((n, 3, 40, 40)).astype(
            np.float32)})
        backend.run("step", _step_feeds(backend, n, rng))
    assert backend.device.allocations == n0
    assert backend.device.synchronized == 8  # one synchronisation per call


def test_more_faces_than_the_profile_is_a_clear_error(backend):
    x = {"frames": np.zeros((MAX_FACES + 1, 3, 40, 40), np.float32)}
    with pytest.raises(ValueError, match=f"{MAX_FACES + 1} faces in one call.*at most "
                                         f"{MAX_FACES}.*--max-faces {MAX_FACES + 1}"):
        backend.run("encoder", x)
    assert backend.max_batch("encoder") == MAX_FACES and backend.max_batch("step") == 5
    # TensorRT's own refusal (set_input_shape -> False) is checked too
    m = backend._models["encoder"]
    m.profile["frames"] = ((1, 3, 40, 40), (64, 3, 40, 40))  # pretend a wider profile
    with pytest.raises(ValueError, match="TensorRT refused shape"):
        backend.run("encoder", {"frames": np.zeros((8, 3, 40, 40), np.float32)})


def test_engine_from_another_tensorrt_is_refused(built, monkeypatch):
    from affedge.sdk.backends.tensorrt_backend import TensorRTBackend

    trt, out, _ = built
    other = "11.1.0" if trt.__version__.startswith("10") else "10.3.0"
    install(monkeypatch, other)
    with pytest.raises(BackendUnavailable, match=f"TensorRT {trt.__version__}.*TensorRT "
                                                 f"{other}.*affedge build-engines"):
        TensorRTBackend(load_bundle(out), device=HostDevice())
    with pytest.raises(BackendUnavailable, match="Other GPU"):
        TensorRTBackend(load_bundle(out), device=HostDevice(
            {"gpu_name": "Other GPU", "compute_capability": "9.0"}))


class HostReference:
    """The engine's host-side state handling (affedge/sdk/engine.py) over ONNX Runtime."""

    def __init__(self, ort, state_names):
        self.ort, self.names, self.states = ort, state_names, {}

    def tick(self, keys, feeds):
        shapes = {s["name"]: tuple(s["shape"][1:]) for s in self.ort.input_specs("step")}
        inputs = dict(feeds)
        for nm in self.names:
            inputs[nm] = np.concatenate([
                self.states[k][nm] if k in self.states else np.zeros((1, *shapes[nm]), np.float32)
                for k in keys])
        return self.ort.run("step", inputs)

    def commit(self, keys, out, ok):
        new = {}
        for i, k in enumerate(keys):
            if ok[i]:
                new[k] = {nm: out["state_out_" + nm[6:]][i:i + 1] for nm in self.names}
            elif k in self.states:
                new[k] = self.states[k]
        self.states = new


def test_resident_state_double_buffer_matches_host_commit_rollback(backend, ort):
    rs = backend.resident_step()
    assert rs.capacity == MAX_FACES + 1
    ref = HostReference(ort, rs.state_in)
    rng = np.random.default_rng(3)
    ticks = [["a"], ["a"], ["a", "b"], ["a", "b"], ["b", "a"], ["b", "a", "c"], ["c", "b"],
             ["c", "b"], ["bg"], ["c", "b", "d", "e", "f"]]
    bound = []
    for t, keys in enumerate(ticks):
        n = len(keys)
        shape = {s["name"]: s["shape"][1:] for s in backend.input_specs("step")}
        feeds = {x: rng.standard_normal((n, *shape[x])).astype(np.float32)
                 for x in rs.feed_names}
        if t == 3:  # a NaN embedding for stream "b": its state must stay as it was
            feeds["embedding"][1] = np.nan
        if t == 6:  # a failed tick: run, then roll back (the engine retries the same tick)
            rs.run(keys, feeds)
            rs.rollback()
        copies = dict(backend.device.copies)
        out = rs.run(keys, feeds)
        bound.append(backend._models["step"].ctx.get_tensor_address("state_0"))
        want = ref.tick(keys, feeds)
        ok_ref = np.isfinite(want["va"]).all(1) & np.all(
            [np.isfinite(want["state_out_" + nm[6:]]).reshape(n, -1).all(1) for nm in rs.state_in],
            axis=0)
        np.testing.assert_array_equal(out["finite"], ok_ref)
        np.testing.assert_allclose(out["va"][ok_ref], want["va"][ok_ref], atol=1e-5)
        rs.commit()
        ref.commit(keys, want, ok_ref)
        if t in (1, 7):  # same streams as the tick before: no device-to-device copy at all
            assert backend.device.copies["d2d"] == copies["d2d"]
        if t == 3:
            assert out["finite"].tolist() == [True, False]
    assert len(set(bound)) == 2  # the two buffer sets, alternating
    assert bound[0] != bound[1] and bound[6] != bound[7]  # commit = swap
    assert rs.layout == ticks[-1]
    for k in ticks[-1]:
        got = rs.states(k)
        for nm, g in zip(rs.state_in, got):
            np.testing.assert_allclose(g, ref.states[k][nm], atol=1e-5)
    # moving a stream's state in from the host (e.g. after a backend switch)
    ones = [np.ones_like(s) for s in rs.states("c")]
    with pytest.raises(ValueError, match="all 5 state rows are in use"):
        rs.load("z", ones)
    rs.load("c", ones)
    assert all(float(s.min()) == float(s.max()) == 1.0 for s in rs.states("c"))
    np.testing.assert_allclose(rs.states("d")[0], ref.states["d"][rs.state_in[0]], atol=1e-5)
    with pytest.raises(ValueError, match="6 streams in one tick.*holds 5"):
        rs.run(list("uvwxyz"), {x: np.zeros((6, 1), np.float32) for x in rs.feed_names})
    with pytest.raises(RuntimeError, match="no uncommitted run"):
        rs.commit()


def test_ort_tensorrt_options_profiles_and_cache(tmp_path, monkeypatch):
    from affedge.sdk.backends.tensorrt_backend import default_cache_dir, ort_tensorrt_options

    b = load_bundle(DEMO)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AFFEDGE_CACHE_DIR", str(tmp_path / "cache"))
    opts = ort_tensorrt_options(b, max_faces=3)
    assert set(opts) == {"encoder", "step", "window"}
    assert opts["encoder"]["trt_profile_min_shapes"] == "frames:1x3x40x40"
    assert opts["encoder"]["trt_profile_max_shapes"] == "frames:3x3x40x40"
    assert "embedding:4x512" in opts["step"]["trt_profile_max_shapes"]
    assert "state_23:4x" in opts["step"]["trt_profile_max_shapes"]
    assert opts["window"]["trt_profile_opt_shapes"].startswith("embedding:1x64x512")
    cache = Path(opts["step"]["trt_engine_cache_path"])
    assert cache.is_relative_to(tmp_path / "cache") and cache.is_relative_to(
        default_cache_dir(b))
    assert opts["step"]["trt_engine_cache_enable"] and opts["step"]["trt_timing_cache_enable"]
    assert not any(tmp_path.glob("*.engine"))
    with pytest.raises(ValueError, match="max_faces"):
        ort_tensorrt_options(b, max_faces=0)


def test_build_engines_in_place_replaces_old_engines(tmp_path, monkeypatch):
    from affedge.export.engines import build_engines

    install(monkeypatch, "11.1.0")
    bdir = tmp_path / "b"
    shutil.copytree(DEMO, bdir)
    for prec in ("fp16", "fp16", "fp32"):
        res = build_engines(bdir, precision=prec, max_faces=2, gpu=FAKE_GPU,
                            device=HostDevice(), timing_cache=tmp_path / "t.cache")
        assert res["ok"], res["parity"]
    b = load_bundle(bdir)  # no stale files, every hash right
    keys = [(a["name"], a["format"], a["precision"]) for a in b.artifacts]
    assert len(keys) == len(set(keys))
    assert sorted(k for k in keys if k[1] == "tensorrt") == [
        ("encoder", "tensorrt", "fp16"), ("encoder", "tensorrt", "fp32"),
        ("step", "tensorrt", "fp16"), ("step", "tensorrt", "fp32")]
    par = [p for p in b.manifest["parity"] if p["format"] == "tensorrt"]
    assert len(par) == 4 and all(p["status"] == "pass" for p in par)
    enc16 = next(p for p in par if p["artifact"] == "encoder" and p["precision"] == "fp16")
    assert 0 < enc16["outputs"]["embedding"]["max_abs"] < 1e-2  # real fp16 rounding


def test_build_engines_command_arguments(tmp_path):
    from affedge.commands import build_engines as cmd

    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    args = p.parse_args([str(tmp_path / "x.zip"), "--max-faces", "8", "--precision", "int8"])
    assert args.max_faces == 8 and args.models == "encoder,step"
    shutil.make_archive(str(tmp_path / "x"), "zip", DEMO)
    with pytest.raises(ValueError, match="zip bundle: give an output directory"):
        cmd.run(args)


def test_build_engines_without_tensorrt_says_where_to_build_and_changes_nothing(tmp_path):
    """Here (no tensorrt module, no GPU) the command used to print "building ..." and then a
    bare "No module named 'tensorrt'"; now one reason with the way out, and no output."""
    from affedge.commands import build_engines as cmd
    from affedge.export.tensorrt_build import tensorrt_available

    if tensorrt_available()[0]:
        pytest.skip("TensorRT and a GPU are available here")
    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    out = tmp_path / "with_engines"
    with pytest.raises(RuntimeError, match="not available.*nothing was changed.*target machine"):
        cmd.run(p.parse_args([str(DEMO), "--out", str(out)]))
    assert not out.exists() and list(tmp_path.iterdir()) == []

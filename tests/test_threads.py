"""The one thread policy: default, $AFFEDGE_THREADS, the ``intra_op_threads`` option, and that
every backend really applies it to its library (read back from the live session/model)."""
from __future__ import annotations

import inspect

import pytest

from affedge.sdk.backends.threads import (
    DEFAULT_SPINNING,
    DEFAULT_THREADS,
    ENV_VAR,
    default_threads,
    thread_policy,
)
from affedge.sdk.recognizer import DEMO_BUNDLE, demo_assets_missing

needs_demo = pytest.mark.skipif(bool(demo_assets_missing()),
                                reason=f"demo assets missing: {demo_assets_missing()}")


def test_default_env_and_option_precedence(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    p = thread_policy()
    assert (p.threads, p.spinning, p.source) == (default_threads(), DEFAULT_SPINNING, "default")
    monkeypatch.setenv(ENV_VAR, " 3 ")
    assert (thread_policy().threads, thread_policy().source) == (3, ENV_VAR)
    assert (thread_policy(2).threads, thread_policy(2).source) == (2, "option")
    assert thread_policy(2, spinning=True).spinning is True
    assert "2 intra-op threads, spinning on (option)" == thread_policy(2, True).describe()


def test_default_is_capped_at_the_usable_cpus(monkeypatch):
    import os

    monkeypatch.delenv(ENV_VAR, raising=False)
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert default_threads() == 1 and thread_policy().threads == 1
    finally:
        os.sched_setaffinity(0, before)
    assert default_threads() == min(DEFAULT_THREADS, len(before))


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_bad_env_value_is_named(monkeypatch, bad):
    monkeypatch.setenv(ENV_VAR, bad)
    with pytest.raises(ValueError, match=ENV_VAR):
        thread_policy()


@pytest.mark.parametrize("bad", [0, -2, True, "x"])
def test_bad_option_is_named(bad):
    with pytest.raises(ValueError, match="intra_op_threads"):
        thread_policy(bad)


def test_every_backend_takes_the_same_option_name():
    from affedge.sdk.backends.onnxruntime_backend import OnnxRuntimeBackend
    from affedge.sdk.backends.openvino_backend import OpenVinoBackend
    from affedge.sdk.backends.torch_backend import TorchBackend, TorchExportBackend
    from affedge.sdk.backends.torchscript_backend import TorchScriptBackend

    for cls in (OnnxRuntimeBackend, OpenVinoBackend, TorchBackend, TorchExportBackend,
                TorchScriptBackend):
        assert "intra_op_threads" in inspect.signature(cls.__init__).parameters, cls.__name__


@needs_demo
@pytest.mark.parametrize("env,opt,want", [(None, None, "default"), ("2", None, 2),
                                          ("2", 1, 1)])
def test_onnxruntime_sessions_get_the_policy(monkeypatch, env, opt, want):
    from affedge.bundle import load_bundle
    from affedge.sdk.backends.onnxruntime_backend import OnnxRuntimeBackend

    monkeypatch.delenv(ENV_VAR, raising=False)
    if env:
        monkeypatch.setenv(ENV_VAR, env)
    be = OnnxRuntimeBackend(load_bundle(DEMO_BUNDLE), "cpu", intra_op_threads=opt)
    want = default_threads() if want == "default" else want
    for sess in be._sessions.values():
        so = sess.get_session_options()
        assert so.intra_op_num_threads == want and so.inter_op_num_threads == 1
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == \
            ("1" if DEFAULT_SPINNING else "0")
    be.close()


@needs_demo
def test_openvino_compiled_models_get_the_policy(monkeypatch, tmp_path):
    pytest.importorskip("openvino", reason="openvino not installed (affedge[openvino])")
    from affedge.bundle import load_bundle
    from affedge.sdk.backends.openvino_backend import OpenVinoBackend

    monkeypatch.setenv(ENV_VAR, "2")
    be = OpenVinoBackend(load_bundle(DEMO_BUNDLE), cache_dir=tmp_path, models=("encoder",))
    cm = be._compiled["encoder"]
    assert int(cm.get_property("INFERENCE_NUM_THREADS")) == 2
    assert int(cm.get_property("NUM_STREAMS")) == 1
    assert str(cm.get_property("ENABLE_CPU_PINNING")).lower() in ("false", "no")
    be.close()


@needs_demo
def test_torch_backend_sets_torch_threads(monkeypatch):
    torch = pytest.importorskip("torch")
    from affedge.bundle import load_bundle
    from affedge.sdk.backends.torch_backend import TorchBackend

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv(ENV_VAR, raising=False)
        TorchBackend(load_bundle(DEMO_BUNDLE), models=("step",), intra_op_threads=2)
        assert torch.get_num_threads() == 2
        TorchBackend(load_bundle(DEMO_BUNDLE), models=("step",))
        assert torch.get_num_threads() == default_threads()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("env, want", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_torch_is_imported_with_openmp_waiting_passively(env, want):
    """The policy's "spinning off" for torch: OpenMP reads OMP_WAIT_POLICY when torch loads,
    so the backends' import sets it first (a user's own setting wins). With OpenMP's spinning
    default and a busy other core, TorchScript ran 3 fps instead of 42 (threads.py)."""
    pytest.importorskip("torch")
    import os
    import subprocess
    import sys

    code = ("import os, sys\n"
            "from affedge.sdk.backends.torchscript_backend import import_torch\n"
            "assert 'torch' not in sys.modules\n"
            "import_torch()\n"
            "print(os.environ.get('OMP_WAIT_POLICY'))\n")
    env_vars = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env is not None:
        env_vars["OMP_WAIT_POLICY"] = env
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env_vars, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == want


_BLAS_PROBE = (
    "import json\n"
    "from threadpoolctl import threadpool_info\n"
    "def blas():\n"
    "    return sorted({i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'})\n"
    "import numpy\n"
    "before = blas()\n"
    "from affedge.sdk.recognizer import Recognizer\n"
    "from affedge.sdk.backends.threads import limit_blas_threads\n"
    "rec = Recognizer.demo()\n"
    "print(json.dumps({'before': before, 'after': blas(), 'said': limit_blas_threads(),\n"
    "                  'stats': rec.stats()['blas_threads']}))\n"
    "rec.close()\n")


@needs_demo
@pytest.mark.parametrize("env, want_after, said", [
    ({}, [1], "1 thread"),
    ({"AFFEDGE_BLAS_THREADS": "2"}, [2], "2 threads (AFFEDGE_BLAS_THREADS)"),
    ({"AFFEDGE_BLAS_THREADS": "keep"}, None, "left alone (AFFEDGE_BLAS_THREADS=keep)"),
    ({"OPENBLAS_NUM_THREADS": "2"}, None, "left alone (OPENBLAS_NUM_THREADS is set)"),
])
def test_the_runtime_gives_numpys_blas_one_thread_unless_told(env, want_after, said):
    """OpenBLAS's second worker busy-waits after each of the audio features' small products:
    with it, 4 file sources through the hub ran 18 % slower and 4 recognizers 25 % (threads.py).
    The first audio timeline sets BLAS to 1 thread process-wide; a user's own choice (the
    library's variables, or AFFEDGE_BLAS_THREADS) wins. Read back from the live library."""
    pytest.importorskip("threadpoolctl")
    import json
    import os
    import subprocess
    import sys

    from affedge.sdk.backends.threads import BLAS_ENV_VAR, BLAS_USER_VARS

    env_vars = {k: v for k, v in os.environ.items()
                if k not in (BLAS_ENV_VAR, *BLAS_USER_VARS)}
    env_vars.update(env)
    out = subprocess.run([sys.executable, "-c", _BLAS_PROBE], capture_output=True, text=True,
                         env=env_vars, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"], "numpy has no BLAS threadpoolctl can see"
    assert got["after"] == (got["before"] if want_after is None else want_after), got
    assert got["said"] == got["stats"] == said


def test_a_bad_blas_thread_count_is_named(monkeypatch):
    import affedge.sdk.backends.threads as th

    monkeypatch.setattr(th, "_blas_applied", None)
    monkeypatch.setenv(th.BLAS_ENV_VAR, "many")
    with pytest.raises(ValueError, match="AFFEDGE_BLAS_THREADS must be an integer >= 1, got "
                                         "'many' \\(or 'keep'"):
        th.limit_blas_threads()
    assert th._blas_applied is None  # nothing was set; the next call checks again

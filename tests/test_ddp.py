"""Distributed data-parallel training: 2 CPU processes (gloo) launched by torchrun.

Both ranks must end with bit-identical weights (gradients all-reduced, BN buffers synced from
rank 0) and rank 0 must have written the fold's checkpoints.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file

WORKER = textwrap.dedent('''
    import sys
    import torch
    torch.set_num_threads(1)
    from safetensors.torch import save_file
    from affedge.training import ddp
    from affedge.training.trainer import TrainOptions, train_fold

    data, out = sys.argv[1], sys.argv[2]
    opts = TrainOptions(encoder="mobile", epochs=1, lr=1e-3, pretrain_epochs=1, pretrain_batch=32,
                        pretrain_stride=4, window=60, hop=40, batch_size=2, progress=False)
    s = train_fold(data, out, fold=0, opts=opts)
    ctx = ddp.context()
    state = {k: v.contiguous() for k, v in s["model"].state_dict().items()}
    save_file(state, f"{out}/rank{ctx.rank}.safetensors")
    ddp.shutdown()
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_rank_gloo_training_gives_identical_weights(synth_dataset, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), str(script), str(synth_dataset), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a = load_file(str(out / "rank0.safetensors"))
    b = load_file(str(out / "rank1.safetensors"))
    assert a.keys() == b.keys() and len(a) > 100
    for k in a:
        assert torch.equal(a[k], b[k]), f"ranks differ in {k}"
    # rank 0 wrote the checkpoints; the summary records the world size
    for d in ("best", "last", "pretrain"):
        assert (out / d / "model.safetensors").is_file() and (out / d / "config.json").is_file()
    assert (out / "last" / "optimizer.safetensors").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    best = load_file(str(out / "best" / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], best[k])
    # one header + one epoch row, written once (rank 0 only)
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 2

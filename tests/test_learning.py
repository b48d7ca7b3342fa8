"""The pipeline learns: a small model trained on tiny synthetic data predicts valence and arousal
of *unseen* videos and identities (a held-out set generated with another seed and an identity
offset) far better than the same model untrained.

Kept small for the test suite (about a minute on two cores); the full-size experiment with its
numbers is ``python -m affedge.training.experiments`` (docs/RESULTS.md).
"""
import pytest
import torch

from affedge.training.experiments import evaluate, load_heldout, untrained_metrics
from affedge.training.trainer import TrainOptions, load_fold, train_fold


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    from affedge.training.data.synthetic import generate

    root = tmp_path_factory.mktemp("learn")
    generate(root / "train", 10, seed=21, seconds=16, fps=25.0, progress=False)
    generate(root / "heldout", 3, seed=22, seconds=16, fps=25.0, identity_offset=700, progress=False)
    return root / "train", root / "heldout"


def test_model_learns_on_unseen_identities(datasets, tmp_path):
    torch.set_num_threads(2)
    train_dir, held_dir = datasets
    data = load_fold(train_dir, 0)
    opts = TrainOptions(encoder="mobile", modality="av", epochs=30, lr=1e-3, batch_size=4,
                        window=100, hop=50, views=2, pretrain_epochs=0, reload_best=False,
                        seed=0, progress=False)
    summary = train_fold(None, tmp_path / "run", data=data, opts=opts)
    trials = load_heldout(held_dir, data.norm_stats, data.feature_cfg)
    # held-out trials share no identity with training
    assert not {t.key for t in trials} & {t.key for t in data.train + data.val}
    res = evaluate(summary["model"], trials, opts.window, opts.hop)["offline"]
    base = untrained_metrics(opts, data, trials)
    print("held-out", res, "untrained", base)
    assert res["valence_ccc"] >= 0.5 and res["arousal_ccc"] >= 0.5, res
    assert abs(base["valence_ccc"]) < 0.2 and abs(base["arousal_ccc"]) < 0.2, base
    assert res["mean_ccc"] - base["mean_ccc"] > 0.4

"""CCC loss (PAPER.md §5): per window, biased covariance / unbiased variances, eps 1e-8."""
import numpy as np
import pytest
import torch

from affedge.training.losses import ccc_loss, ccc_per_window, frame_ccc_loss


def _direct(y, p, eps=1e-8):
    """Straight transcription of the formula for one 1-D window."""
    t = len(y)
    my, mp = y.mean(), p.mean()
    cov = np.sum((y - my) * (p - mp)) / t
    vy = np.sum((y - my) ** 2) / (t - 1)
    vp = np.sum((p - mp) ** 2) / (t - 1)
    return 2 * cov / (vy + vp + (my - mp) ** 2 + eps)


def test_matches_direct_formula_per_window_and_channel():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(3, 50, 2))
    p = 0.5 * y + rng.normal(scale=0.5, size=y.shape) + 0.2
    got = ccc_per_window(torch.tensor(p), torch.tensor(y)).numpy()
    want = np.array([[_direct(y[b, :, c], p[b, :, c]) for c in range(2)] for b in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    loss = ccc_loss(torch.tensor(p), torch.tensor(y)).item()
    assert loss == pytest.approx(np.mean(1 - want), rel=1e-12)


def test_identical_sequences_give_the_reference_convention_value():
    # biased cov / unbiased var: CCC(y, y) = (T-1)/T, not 1 (kept on purpose)
    y = torch.randn(2, 10, 2, dtype=torch.float64)
    np.testing.assert_allclose(ccc_per_window(y, y).numpy(), 0.9, rtol=1e-7)


def test_mask_equals_truncated_window():
    rng = np.random.default_rng(1)
    y = torch.tensor(rng.normal(size=(1, 40, 2)))
    p = torch.tensor(rng.normal(size=(1, 40, 2)))
    mask = torch.zeros(1, 40, dtype=torch.bool)
    mask[0, :25] = True
    np.testing.assert_allclose(ccc_per_window(p, y, mask).numpy(),
                               ccc_per_window(p[:, :25], y[:, :25]).numpy(), rtol=1e-10)


def test_gradient_descent_increases_ccc():
    torch.manual_seed(0)
    y = torch.randn(4, 30, 2)
    p = torch.zeros(4, 30, 2, requires_grad=True)
    opt = torch.optim.SGD([p], lr=5.0)
    first = None
    for _ in range(50):
        opt.zero_grad()
        loss = ccc_loss(p + 1e-3 * torch.randn_like(p), y)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert first > 0.9 and loss.item() < 0.2


def test_frame_loss_and_bad_shapes():
    y = torch.randn(20, 2)
    assert frame_ccc_loss(y, y).item() == pytest.approx(1 - 19 / 20, abs=1e-6)
    with pytest.raises(ValueError, match="shape"):
        ccc_loss(torch.zeros(2, 5, 2), torch.zeros(2, 5, 1))
    with pytest.raises(ValueError, match=r"\[B, T, C\]"):
        ccc_loss(torch.zeros(5, 2), torch.zeros(5, 2))

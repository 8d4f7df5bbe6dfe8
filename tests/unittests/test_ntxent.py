"""NT-Xent / NT-Xent-AM against hand computations."""

import math

import pytest
import torch

from ssps_ext.losses.ntxent import NTXent


def loop_loss(z1, z2, tau, m, symmetric):
    """Direct transcription of the loss definition, one anchor at a time."""
    z1 = torch.nn.functional.normalize(z1, dim=1).double()
    z2 = torch.nn.functional.normalize(z2, dim=1).double()
    b = z1.shape[0]
    terms = []
    if symmetric:
        z = torch.cat([z1, z2])
        for r in range(2 * b):
            pos = (r + b) % (2 * b)
            num = math.exp((float(z[r] @ z[pos]) - m) / tau)
            den = num + sum(math.exp(float(z[r] @ z[j]) / tau) for j in range(2 * b) if j not in (r, pos))
            terms.append(-math.log(num / den))
    else:
        for i in range(b):
            num = math.exp((float(z1[i] @ z2[i]) - m) / tau)
            den = num + sum(math.exp(float(z1[i] @ z2[j]) / tau) for j in range(b) if j != i)
            terms.append(-math.log(num / den))
    return sum(terms) / len(terms)


def test_closed_form_two_orthogonal_samples():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    z1 = z2 = torch.stack([a, b])
    # one positive at cos 1, negatives at cos 0, tau = 1
    assert NTXent(1.0, 0.0, symmetric=False)(z1, z2).item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert NTXent(1.0, 0.5, symmetric=False)(z1, z2).item() == pytest.approx(math.log(1 + math.exp(-0.5)))
    # symmetric: 2 negatives per anchor (the other sample in both views)
    assert NTXent(1.0, 0.0, symmetric=True)(z1, z2).item() == pytest.approx(math.log(1 + 2 * math.exp(-1)))
    assert NTXent(1.0, 0.2, symmetric=True)(z1, z2).item() == pytest.approx(math.log(1 + 2 * math.exp(-0.8)))


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("margin", [0.0, 0.1, 0.3])
def test_matches_loop_definition(symmetric, margin):
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    expected = loop_loss(z1, z2, 0.2, margin, symmetric)
    got = NTXent(temperature=0.2, margin=margin, symmetric=symmetric)(z1, z2).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_margin_increases_loss_and_gradients_flow():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(6, 4, generator=g, requires_grad=True)
    z2 = torch.randn(6, 4, generator=g, requires_grad=True)
    plain = NTXent(0.1, 0.0)(z1, z2)
    am = NTXent(0.1, 0.2)(z1, z2)
    assert am > plain
    am.backward()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


def test_accuracy_and_invalid_temperature():
    z = torch.eye(4)
    assert NTXent(0.1).accuracy(z, z).item() == 1.0
    with pytest.raises(ValueError, match="temperature"):
        NTXent(0.0)

"""Kernel-size-1 convolutions without SpeechBrain's empty "same" padding copy."""

import copy
import functools

import speechbrain.nnet.CNN as sb_cnn
import torch
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain.nnet.CNN import Conv1d

from ssps_ext.conv_padding import skip_empty_padding


def _ecapa():
    torch.manual_seed(0)
    return ECAPA_TDNN(16, channels=[16, 16, 16, 16, 48], lin_neurons=8, attention_channels=8, se_channels=8)


def _pad_calls(monkeypatch):
    calls = []
    real_pad = sb_cnn.F.pad

    def counting_pad(x, pad, *args, **kwargs):
        calls.append(tuple(pad))
        return real_pad(x, pad, *args, **kwargs)

    monkeypatch.setattr(sb_cnn.F, "pad", counting_pad)
    return calls


def test_ecapa_kernel1_convolutions_stop_padding(monkeypatch):
    """ECAPA-TDNN: 38 convolutions, 16 of kernel size 1. Before, a forward
    pads 38 times, 16 of them by (0, 0); after, only the 22 real paddings
    remain, and a second call changes nothing."""
    encoder = _ecapa()
    x, lengths = torch.randn(2, 30, 16), torch.ones(2)
    calls = _pad_calls(monkeypatch)
    encoder(x, lengths)
    assert len(calls) == 38 and calls.count((0, 0)) == 16
    assert skip_empty_padding(encoder) == 16
    assert skip_empty_padding(encoder) == 0
    calls.clear()
    encoder(x, lengths)
    assert len(calls) == 22 and (0, 0) not in calls
    kernels = {conv.kernel_size: conv.padding for conv in encoder.modules() if isinstance(conv, Conv1d)}
    assert kernels == {1: "valid", 3: "same", 5: "same"}


def test_outputs_and_gradients_bit_identical():
    """Training mode (batch statistics), forward and backward: the changed
    encoder's output and every parameter gradient equal the original's bit
    for bit."""
    reference = _ecapa()
    changed = copy.deepcopy(reference)
    assert skip_empty_padding(changed) == 16
    x = torch.randn(4, 50, 16)
    lengths = torch.tensor([1.0, 0.8, 1.0, 0.6])
    outputs = []
    for encoder in (reference, changed):
        encoder.train()
        out = encoder(x, lengths)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outputs.append(out)
    assert torch.equal(outputs[0], outputs[1])
    for (name, a), b in zip(reference.named_parameters(), changed.parameters()):
        assert torch.equal(a.grad, b.grad), name


def test_strided_kernel1_changes_wider_kernels_keep_padding():
    """SpeechBrain pads a strided convolution by floor(k / 2) on each side:
    empty for kernel size 1 with stride 2 (changed, same output), (1, 1)
    for kernel size 3 (kept), as for every kernel wider than 1."""
    torch.manual_seed(0)
    strided = Conv1d(out_channels=4, kernel_size=1, in_channels=8, stride=2, skip_transpose=True)
    wide = Conv1d(out_channels=4, kernel_size=3, in_channels=8, skip_transpose=True)
    x = torch.randn(2, 8, 11)
    before = strided(x)
    assert skip_empty_padding(torch.nn.ModuleList([strided, wide])) == 1
    assert (strided.padding, wide.padding) == ("valid", "same")
    assert torch.equal(strided(x), before)


def test_brain_construction_applies_it():
    """Every module given to an SSL brain gets it, the encoder included."""
    from ssps_ext.brains.simclr import SimCLRBrain

    brain = SimCLRBrain(
        {"encoder": _ecapa()}, functools.partial(torch.optim.Adam, lr=1e-3),
        {"ssps": None, "projector": None}, run_opts={"device": "cpu"},
    )
    paddings = [conv.padding for conv in brain.modules.encoder.modules() if isinstance(conv, Conv1d) and conv.kernel_size == 1]
    assert paddings == ["valid"] * 16

"""Skip SpeechBrain's empty "same" padding on kernel-size-1 convolutions.

``speechbrain.nnet.CNN.Conv1d(padding="same")`` pads its input with
``F.pad(x, [p_left, p_right], mode=padding_mode)`` before every convolution,
also when both amounts are 0 (kernel size 1, stride 1). ``F.pad`` then
still returns a copy of the input, and autograd copies the gradient back
through it: two full passes over the tensor that change nothing.

ECAPA-TDNN has 16 such convolutions of its 38 (the two 1x1 TDNNs and the
two squeeze-excitation convolutions of each SE-Res2Net block, the
multi-layer feature aggregation, the two attentive-statistics-pooling
convolutions and the final ``fc``), and they see its widest tensors: the
3C channels of the aggregation and the 9C-channel input of the attention.
Measured on the 2-core development CPU (issue 11): a SimCLR step of the
C = 128 encoder on two 64 x 2-s views took 969 ms as built and 831 ms with
these 16 convolutions set to ``padding="valid"`` (median of 5 alternated
rounds); the authors' encoder took 962 ms in the same rounds.

Nothing changes numerically: a 0-padded copy holds the same values as its
input, so the convolution's output and every gradient are bit-identical
(``tests/unittests/test_conv_padding.py``). Convolutions whose "same"
padding is not empty (kernel size > 1, strided) keep it.
"""

from speechbrain.nnet.CNN import Conv1d, get_padding_elem


def empty_same_padding(conv):
    """True when ``conv`` pads "same" by 0 frames on both sides."""
    if conv.padding != "same":
        return False
    return get_padding_elem(conv.in_channels, conv.stride, conv.kernel_size, conv.dilation) == [0, 0]


def skip_empty_padding(module):
    """Sets ``padding="valid"`` on every SpeechBrain ``Conv1d`` inside
    ``module`` (itself included) whose "same" padding is empty; returns how
    many were changed. Idempotent; works through DDP and torch.compile
    wrappers, whose ``modules()`` reach the wrapped network."""
    changed = 0
    for conv in module.modules():
        if isinstance(conv, Conv1d) and empty_same_padding(conv):
            conv.padding = "valid"
            changed += 1
    return changed

import itertools

import numpy as np
import pytest

from dalle_jax.nn import masks


def naive_mask(kind, text_length, height, width, kernel):
    """The masks spelt out position by position."""
    length = text_length + height * width
    mask = np.zeros((length, length), bool)
    for q, k in itertools.product(range(length), repeat=2):
        if k > q:
            continue  # causal
        if q < text_length or k < text_length:
            mask[q, k] = True  # text is always visible to what comes after it
            continue
        (qr, qc), (kr, kc) = divmod(q - text_length, width), divmod(k - text_length, width)
        if kind == "full":
            mask[q, k] = True
        elif kind == "row":
            mask[q, k] = (q - k) <= width
        elif kind == "column":
            mask[q, k] = qc == kc
        elif kind == "conv":
            mask[q, k] = abs(qr - kr) <= kernel // 2 and abs(qc - kc) <= kernel // 2
    return mask


@pytest.mark.parametrize("kind", masks.ATTENTION_KINDS)
@pytest.mark.parametrize("text_length,height,width,kernel", [(3, 4, 4, 3), (5, 3, 6, 5), (1, 5, 2, 3)])
def test_mask_equals_naive_reference(kind, text_length, height, width, kernel):
    np.testing.assert_array_equal(masks.attention_mask(kind, text_length, height, width, kernel),
                                  naive_mask(kind, text_length, height, width, kernel))


def test_every_position_sees_itself_and_all_text():
    for kind in masks.ATTENTION_KINDS:
        mask = masks.attention_mask(kind, 4, 3, 3, 3)
        assert mask.diagonal().all()
        assert mask[4:, :4].all()  # image tokens see the whole caption
        assert not np.triu(mask, 1).any()  # nothing sees the future


def test_sparse_layer_pattern_follows_the_paper():
    assert masks.layer_kinds("sparse", 4) == ("row", "column", "row", "conv")
    kinds = masks.layer_kinds("sparse", 64)
    assert kinds[-1] == "conv"
    assert [i + 1 for i, k in enumerate(kinds) if k == "column"] == list(range(2, 64, 4))
    assert masks.layer_kinds("full", 3) == ("full",) * 3
    assert masks.layer_kinds("row,conv", 2) == ("row", "conv")
    with pytest.raises(ValueError, match="must be 'sparse', 'full'"):
        masks.layer_kinds("row,diagonal", 2)

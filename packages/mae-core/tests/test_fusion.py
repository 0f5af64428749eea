"""The co-attention fusion layer: each stream reads the other stream's *input* (simultaneous update), padding is
never attended to, streams of different widths, and the stack's hidden states (input of every layer)."""
import torch

from mae_core.layers import CoAttentionLayer, CoAttentionStack, CrossBlock


def test_co_attention_is_two_cross_blocks_reading_the_other_input():
    torch.manual_seed(0)
    layer = CoAttentionLayer(16, 2, dim_b=8, num_heads_b=2).eval()
    assert isinstance(layer.block_a, CrossBlock) and isinstance(layer.block_b, CrossBlock)
    a, b = torch.randn(2, 5, 16), torch.randn(2, 3, 8)
    a2, b2 = layer(a, b)
    assert a2.shape == a.shape and b2.shape == b.shape
    # the b update reads the *old* a (as the reference's image_layer(y, x) after text_layer(x, y) on the same x)
    assert torch.allclose(b2, layer.block_b(b, a), atol=1e-6)
    assert not torch.allclose(b2, layer.block_b(b, a2), atol=1e-3)
    assert torch.allclose(a2, layer.block_a(a, b), atol=1e-6)
    # each stream depends on the other one
    a3, _ = layer(a, torch.randn(2, 3, 8))
    assert (a3 - a2).abs().max() > 1e-3


def test_padding_is_never_attended_to():
    torch.manual_seed(1)
    layer = CoAttentionLayer(8, 2).eval()
    a, b = torch.randn(2, 6, 8), torch.randn(2, 4, 8)
    mask_a = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    mask_b = torch.ones(2, 4, dtype=torch.bool)
    a2, b2 = layer(a, b, mask_a, mask_b)
    a_noisy = a.clone()
    a_noisy[0, 4:] = 100 * torch.randn(2, 8)  # change only the padded tokens of sample 0
    a3, b3 = layer(a_noisy, b, mask_a, mask_b)
    assert torch.allclose(b3, b2, atol=1e-5)  # the other stream never sees them
    assert torch.allclose(a3[0, :4], a2[0, :4], atol=1e-5)  # nor do the real tokens of the same stream
    # without the mask, they are seen
    a4, b4 = layer(a_noisy, b)
    assert (b4[0] - b2[0]).abs().max() > 1e-3


def test_stack_hidden_states_are_the_inputs_of_each_layer():
    torch.manual_seed(2)
    stack = CoAttentionStack(3, 8, 2).eval()
    a, b = torch.randn(1, 4, 8), torch.randn(1, 5, 8)
    a_out, b_out, hidden = stack(a, b, return_hidden=True)
    assert len(hidden) == 4 and hidden[0][0] is a and hidden[0][1] is b
    x, y = a, b
    for i, layer in enumerate(stack.layers):
        assert torch.equal(hidden[i][0], x) and torch.equal(hidden[i][1], y)
        x, y = layer(x, y)
    assert torch.equal(hidden[3][0], a_out) and torch.equal(x, a_out) and torch.equal(y, b_out)

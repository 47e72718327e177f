import torch

from circuitx.models import head_reads, transformer_weights


def test_head_reads_are_the_weights_q_k_v_and_built_once_per_model(tiny_model):
    reads = head_reads(tiny_model)
    assert reads is not None and head_reads(tiny_model) is reads
    weights = transformer_weights(tiny_model, llama=True)
    for layer, block in enumerate(weights.blocks):
        assert torch.equal(reads.weights["q"][layer], block.W_Q)
        assert torch.equal(reads.weights["v"][layer], block.W_V)
        assert torch.equal(reads.gains[layer], block.ln1[0])
    assert reads.weights["k"][0].shape == (
        tiny_model.n_heads,
        tiny_model.d_model,
        tiny_model.d_head,
    )
    assert not reads.rms and reads.eps == weights.eps

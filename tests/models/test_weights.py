import torch
from conftest import gpt2_tokenizer

from circuitx import load_model
from circuitx.decomposition import Sources, propagate
from circuitx.models import EMBED_OUTPUT_HOOK, head_reads, transformer_weights


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


def test_a_layers_own_attention_scale_is_in_the_weights(tmp_path):
    """A new user's trial: GPT-2 with scale_attn_by_inverse_layer_idx (the Stanford CRFM
    models) ran right, but the weights the methods compute with (CD-T's pass, AtP*'s QK
    fix, the transcoder's) divided every layer's scores by sqrt(d_head) alone: CD-T's
    clean pass was 1.44 from the model's logits."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = gpt2_tokenizer()
    torch.manual_seed(1)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=64, n_layer=3, n_head=4, n_positions=128,
        initializer_range=0.2, scale_attn_by_inverse_layer_idx=True,
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = load_model(str(tmp_path), device="cpu", dtype="float64")
    weights = transformer_weights(model, llama=True)
    assert [block.score_divisor for block in weights.blocks] == [1.0, 2.0, 3.0]
    tokens = torch.tensor([[50256, 464, 3797, 318, 257, 1332, 286, 262]])
    embedded = {}
    with torch.no_grad():
        logits = model.run(tokens, [(EMBED_OUTPUT_HOOK, lambda t: embedded.setdefault("e", t))])
        none = Sources(model.layout, torch.zeros(1, model.layout.n_senders, dtype=torch.bool), {})
        positions = torch.arange(tokens.shape[1])[None]
        _, whole = propagate(weights, embedded["e"], 0, none, positions)
    assert (whole.view_as(logits) - logits).abs().max() < 1e-9

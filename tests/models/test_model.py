import torch

import circuitx.models.model
from circuitx.builtin import load as load_model
from circuitx.models import head_output_hook


def test_shape_is_read_from_the_config(tiny_model):
    m = tiny_model
    assert (m.n_layers, m.n_heads, m.d_model, m.d_head, m.has_mlp) == (2, 4, 32, 8, True)
    assert m.d_vocab == 50257 and m.bos_token_id == 50256


def test_run_at_positions_matches_full_logits(tiny_model):
    tokens = torch.randint(0, 1000, (4, 7), generator=torch.Generator().manual_seed(2))
    at = torch.tensor([6, 0, 3, 5])
    full = tiny_model.run(tokens)
    picked = tiny_model.run(tokens, positions=at)
    torch.testing.assert_close(picked, full[torch.arange(4), at])


def test_hooks_can_replace_activations(tiny_model):
    tokens = torch.randint(0, 1000, (2, 5), generator=torch.Generator().manual_seed(3))
    _, cache = tiny_model.run_with_cache(tokens, [head_output_hook(1)])
    assert cache[head_output_hook(1)].shape == (2, 5, 4, 8)
    base = tiny_model.run(tokens)
    zeroed = tiny_model.run(tokens, [(head_output_hook(1), lambda z: torch.zeros_like(z))])
    assert not torch.allclose(base, zeroed)


def test_unknown_words_are_those_the_tokenizer_reads_as_its_unknown_token(tiny_model):
    planted_ioi = load_model("planted-ioi")
    words = planted_ioi.unknown_words("When Mary and John went, Bartholomew")
    assert words == ["Mary", "Bartholomew"]
    assert planted_ioi.unknown_words("When John and Sarah went to the store") == []
    assert tiny_model.unknown_words("When Bartholomew met Xyzzyplugh") == []  # byte-level BPE


def test_encoding_many_texts_at_once_gives_each_ones_tokens(tiny_model):
    texts = ["When Mary and John went", " Mary", "café  naïve\n\tx ", "", "1789-17"]
    for model in (tiny_model, load_model("planted-ioi")):
        assert model.encode_many(texts) == [model.encode(text) for text in texts]
    assert tiny_model.encode_many([]) == []


def test_encoding_many_texts_goes_in_chunks_that_keep_their_order(tiny_model, monkeypatch):
    """Each tokenizer call takes a chunk (Ctrl-C waits for a call: 100000 prompts in one
    held it 3 s); the chunks' ids come back in the texts' order."""
    monkeypatch.setattr(circuitx.models.model, "ENCODE_CHUNK", 2)
    calls = []
    original = type(tiny_model.tokenizer).__call__
    monkeypatch.setattr(
        type(tiny_model.tokenizer), "__call__",
        lambda tok, texts, **kw: calls.append(len(texts)) or original(tok, texts, **kw),
    )  # fmt: skip
    texts = ["When Mary", " and John", " went to", " the", " store"]
    tiny_model._encoded.clear()  # none encoded before
    assert tiny_model.encode_many(texts) == [tiny_model.encode(text) for text in texts]
    assert calls == [2, 2, 1]
    calls.clear()  # each distinct text once, and once only (a task file's checks share them)
    again = tiny_model.encode_many([*texts, " the", "When John", "When John"])
    assert again == [tiny_model.encode(text) for text in [*texts, " the", *["When John"] * 2]]
    assert calls == [1]
    again[-1].append(0)  # each text's ids its own list
    assert tiny_model.encode_many(["When John"]) == [tiny_model.encode("When John")]

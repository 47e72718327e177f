import pytest

from circuitx.discovery.references import resolve_reference
from circuitx.errors import CircuitxError


def test_auto_goes_without_a_reference_on_a_model_that_only_says_it_is_the_papers():
    """A small model whose config names GPT-2 small: ``auto`` notes why there is no
    reference and the run goes on; asking for the reference by name is still an error."""
    reference, label, why_not = resolve_reference(
        "auto", "ioi", "openai-community/gpt2", (2, 4, True)
    )
    assert reference is None and label is None
    assert why_not.startswith("no reference: the ioi reference circuit needs at least 12 layers")
    assert why_not.endswith("(the model says it is openai-community/gpt2)")
    with pytest.raises(CircuitxError, match="needs at least 12 layers"):
        resolve_reference("ioi", "ioi", "openai-community/gpt2", (2, 4, True))
    reference, label, _ = resolve_reference("auto", "ioi", "openai-community/gpt2", (12, 12, True))
    assert label == "ioi" and reference.number_of_nodes() > 0

"""Models: the only package that imports TransformerLens.

A model is a local directory holding a Hugging Face model and its tokenizer, or a Hugging
Face hub name or alias (built-in model names are resolved to directories by
:mod:`circuitx.builtin`, above this package). Everything is loaded through
``TransformerBridge`` in compatibility mode, so hook names and weight conventions are
HookedTransformer's. :mod:`~circuitx.models.hooks` names the hook points,
:mod:`~circuitx.models.model` holds a loaded :class:`Model`,
:mod:`~circuitx.models.weights` reads its parameters out (and
:mod:`~circuitx.models.unfolded` in CD-T's authors' form), and
:mod:`~circuitx.models.loading` loads one.
"""

from circuitx.models.hooks import (
    EDGE_HOOK_FLAGS,
    EMBED_OUTPUT_HOOK,
    HOOK_FLAGS,
    LOGITS_INPUT_HOOK,
    UNEMBED_INPUT_HOOK,
    HookFn,
    attention_output_hook,
    attention_pattern_hook,
    head_input_hook,
    head_output_hook,
    head_vector_hook,
    mlp_input_hook,
    mlp_normalized_input_hook,
    mlp_output_hook,
    norm_scale_hook,
    post_attention_scale_hook,
    resid_pre_hook,
    sender_output_hook,
)
from circuitx.models.loading import (
    ATTN_ONLY_KEY,
    DTYPES,
    HUB_ALIASES,
    MODEL_FAMILIES,
    ZERO_EMBEDDING_KEY,
    canonical_model_name,
    hub_config,
    is_tl_legacy_dir,
    load_model,
    local_model_hub_id,
    looks_like_path,
    parse_device,
    parse_dtype,
    quiet_loaders,
    saved_config,
)
from circuitx.models.model import Model
from circuitx.models.unfolded import UnfoldedForm, unfolded_form
from circuitx.models.weights import (
    BlockWeights,
    HeadReads,
    TransformerWeights,
    head_reads,
    transformer_weights,
)

__all__ = [
    "ATTN_ONLY_KEY",
    "BlockWeights",
    "DTYPES",
    "EDGE_HOOK_FLAGS",
    "EMBED_OUTPUT_HOOK",
    "HOOK_FLAGS",
    "HUB_ALIASES",
    "HeadReads",
    "HookFn",
    "LOGITS_INPUT_HOOK",
    "MODEL_FAMILIES",
    "Model",
    "TransformerWeights",
    "UNEMBED_INPUT_HOOK",
    "UnfoldedForm",
    "ZERO_EMBEDDING_KEY",
    "attention_output_hook",
    "attention_pattern_hook",
    "canonical_model_name",
    "head_input_hook",
    "head_reads",
    "head_output_hook",
    "head_vector_hook",
    "load_model",
    "local_model_hub_id",
    "hub_config",
    "is_tl_legacy_dir",
    "saved_config",
    "looks_like_path",
    "mlp_input_hook",
    "mlp_normalized_input_hook",
    "mlp_output_hook",
    "norm_scale_hook",
    "parse_device",
    "parse_dtype",
    "post_attention_scale_hook",
    "quiet_loaders",
    "resid_pre_hook",
    "sender_output_hook",
    "transformer_weights",
    "unfolded_form",
]

"""Which zoo_ref class a checkpoint directory holds (its config.json's model_type), like transformers' Auto*."""
from .checkpoint import checkpoint_dir, read_config
from .errors import ConfigError


def model_class(model_type: str):
    from .qwen2 import Qwen2ForCausalLM
    from .qwen3 import Qwen3ForCausalLM
    from .qwen3_vl import Qwen3VLForConditionalGeneration
    classes = {"qwen3_vl": Qwen3VLForConditionalGeneration, "qwen3": Qwen3ForCausalLM, "qwen2": Qwen2ForCausalLM}
    if model_type not in classes:
        raise ConfigError(f"model_type {model_type!r} is not in the zoo (supported: {', '.join(sorted(classes))})")
    return classes[model_type]


def from_pretrained(path, **kwargs):
    """The zoo_ref model of a checkpoint directory; kwargs as the class's from_pretrained (dtype, device, ...)."""
    return model_class(read_config(checkpoint_dir(path)).get("model_type")).from_pretrained(path, **kwargs)

"""Which compiled runtime serves which zoo_ref model class: `zoo.compile` looks the model's class up here
(through its MRO, so a new CausalLM family is served by the decoder runtime without registering)."""
from zoo_ref.errors import InputTypeError

_RUNTIMES = {}  # zoo_ref class -> compiled class


def register(*model_classes):
    def decorate(runtime):
        for cls in model_classes:
            _RUNTIMES[cls] = runtime
        return runtime
    return decorate


def runtime_for(model):
    for cls in type(model).__mro__:
        if cls in _RUNTIMES:
            return _RUNTIMES[cls]
    names = ", ".join(sorted(c.__name__ for c in _RUNTIMES))
    raise InputTypeError(f"zoo.compile supports zoo_ref models ({names}), got {type(model).__name__}")

"""Checks at the public boundary, shared by the references and the compiled models: every argument is checked
for type, shape, dtype, range and consistency before anything is computed or written. Errors are InputError /
InputTypeError (ValueError / TypeError) naming the argument, what was expected and what came.

Semantics (the reference defines them, the compiled path matches): a row needs at least one valid token, and its
tokens are one run (padding only before and/or after it, no holes: the compiled path attends by each row's window);
a padding position attends to nothing (zeros before the output projection); generate refuses right padding (new
tokens follow each row's last token, which must be the last column); attention_mask holds 0/1 only. Inside a user's
own torch.compile of a reference model, the value checks (which read the tensors) are skipped and the shape and type
checks stay; zoo.compile checks before its graphs."""
import torch

from .errors import InputError, InputTypeError

INTEGER = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def check_tokens(input_ids, attention_mask, vocab_size: int, generating: bool = False):
    """-> valid bool [B, T]. input_ids: integer tensor [B, T >= 1] with ids in [0, vocab_size)."""
    if not isinstance(input_ids, torch.Tensor):
        raise InputTypeError(f"input_ids must be a torch.Tensor of token ids [batch, length], got "
                             f"{type(input_ids).__name__}")
    if input_ids.dtype not in INTEGER:
        raise InputTypeError(f"input_ids must hold integers (torch.long), got {input_ids.dtype}")
    if input_ids.ndim != 2 or input_ids.shape[0] < 1 or input_ids.shape[1] < 1:
        raise InputError(f"input_ids must be [batch >= 1, length >= 1], got {tuple(input_ids.shape)} (an empty "
                         "prompt has nothing to condition on)")
    values = not torch.compiler.is_compiling()  # under torch.compile(model): shapes and types only
    lo, hi = (int(v) for v in torch.stack(torch.aminmax(input_ids)).tolist()) if values else (0, 0)
    if lo < 0 or hi >= vocab_size:
        raise InputError(f"input_ids must be token ids in [0, {vocab_size}) (the vocabulary), got values in "
                         f"[{lo}, {hi}]")
    if attention_mask is None:
        return torch.ones_like(input_ids, dtype=torch.bool)
    if not isinstance(attention_mask, torch.Tensor):
        raise InputTypeError(f"attention_mask must be a torch.Tensor [batch, length] of 0/1, got "
                             f"{type(attention_mask).__name__}")
    if attention_mask.shape != input_ids.shape:
        raise InputError(f"attention_mask must have input_ids' shape {tuple(input_ids.shape)}, got "
                         f"{tuple(attention_mask.shape)}")
    if attention_mask.dtype != torch.bool and attention_mask.dtype not in INTEGER:
        raise InputTypeError(f"attention_mask must be bool or integer 0/1, got {attention_mask.dtype}")
    if attention_mask.device != input_ids.device:
        raise InputError(f"attention_mask is on {attention_mask.device} but input_ids on {input_ids.device}")
    valid = attention_mask.bool()
    if not values:
        return valid
    runs = valid[:, 0].long() + (valid[:, 1:] & ~valid[:, :-1]).sum(-1)  # runs of 1s per row
    flags = torch.stack([((attention_mask != 0) & (attention_mask != 1)).any(), (~valid.any(-1)).any(),
                         (~valid[:, -1]).any(), (runs > 1).any()]).tolist()
    if flags[0]:
        raise InputError("attention_mask must hold only 0 (padding) and 1 (token)")
    if flags[1]:
        rows = torch.nonzero(~valid.any(-1)).flatten().tolist()
        raise InputError(f"attention_mask rows {rows} have no valid token: every row needs at least one")
    if flags[3]:
        rows = torch.nonzero(runs > 1).flatten().tolist()
        raise InputError(f"attention_mask rows {rows} have holes: each row must be one run of 1s with padding "
                         "(0s) only before and/or after it")
    if generating and flags[2]:
        rows = torch.nonzero(~valid[:, -1]).flatten().tolist()
        raise InputError(f"attention_mask rows {rows} are right-padded: generate needs left padding (each row's "
                         "last column a real token), e.g. a tokenizer with padding_side='left'")
    return valid


def check_count(name, value, minimum=1):
    """An int >= minimum (bools refused)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputTypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise InputError(f"{name} must be an int >= {minimum}, got {value}")
    return value

"""Sibling weights in one buffer: linears that read the same input get their weights (and biases) stored back to
back, so compile_passes.linears can run them as one mm. The groups are declared on the zoo_ref modules
(`packed_groups`, e.g. q/k/v and gate/up). In place and value-preserving: each weight becomes a view of the
packed buffer (no extra memory), and the module computes exactly what it did."""
import torch
from torch import nn


def _pack(tensors, requires_grad):
    with torch.no_grad():
        packed = torch.cat([t.detach() for t in tensors])
    views, row = [], 0
    for t in tensors:
        views.append(nn.Parameter(packed[row:row + t.shape[0]], requires_grad=requires_grad))
        row += t.shape[0]
    return views


def pack_linears(*linears: nn.Linear) -> bool:
    """Pack the weights (and biases) of `linears` (same in_features, dtype, device; all with a bias or none);
    False if they can't be."""
    ws = [lin.weight for lin in linears]
    has_bias = {lin.bias is not None for lin in linears}
    if len(has_bias) != 1 or len({(w.shape[1], w.dtype, w.device) for w in ws}) != 1:
        return False
    for lin, w in zip(linears, _pack(ws, ws[0].requires_grad)):
        lin.weight = w
    if has_bias == {True}:
        for lin, b in zip(linears, _pack([lin.bias for lin in linears], linears[0].bias.requires_grad)):
            lin.bias = b
    return True


def declared_groups(model: nn.Module):
    """[(name, [linears])] for every `packed_groups` entry a submodule declares (groups with a missing member,
    e.g. MLA's q_proj when it has q_a_proj, are skipped)."""
    groups = []
    for name, module in model.named_modules():
        for group in getattr(type(module), "packed_groups", ()):
            linears = [getattr(module, attr, None) for attr in group]
            if all(isinstance(lin, nn.Linear) for lin in linears):
                groups.append((name, linears))
    return groups


class PackedWeights:
    """The groups zoo.compile packed. Compiled graphs read each group as one buffer (and CUDA graphs bake in
    its address), and Dynamo does not guard on weights aliasing each other, so a group must stay where it
    was packed: `check()` before running turns a replaced weight into an error instead of wrong results."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.groups = []  # [(linears, their parameters' addresses)]

    def pack_declared(self):
        for _, linears in declared_groups(self.module):
            if pack_linears(*linears):
                self.groups.append((linears, [self._ptrs(lin) for lin in linears]))

    @staticmethod
    def _ptrs(lin):
        # the parameters dict, not Module.__getattr__: check() runs on every call (an MLA step's host time)
        weight, bias = lin._parameters["weight"], lin._parameters.get("bias")
        return weight.data_ptr(), None if bias is None else bias.data_ptr()

    def check(self):
        for linears, ptrs in self.groups:
            for lin, ptr in zip(linears, ptrs):
                if self._ptrs(lin) != ptr:
                    names = {id(m): name for name, m in self.module.named_modules()}
                    which = "weight" if lin.weight.data_ptr() != ptr[0] else "bias"
                    raise RuntimeError(
                        f"{names.get(id(lin), 'a linear')}.{which} was replaced after zoo.compile packed it "
                        f"with {', '.join(names.get(id(x), '?').rsplit('.', 1)[-1] for x in linears)}; "
                        "update weights in place (load_state_dict copies into them) or call zoo.compile again")

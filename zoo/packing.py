"""Sibling weights in one buffer: linears that read the same input get their weights stored back to back, so
compile_passes.linears can run them as one mm. In place and value-preserving: each weight becomes a view of
the packed buffer (no extra memory), and the module computes exactly what it did."""
import torch
from torch import nn


def pack_linears(*linears: nn.Linear) -> bool:
    """Pack the weights of `linears` (same in_features, dtype, device, no bias); False if they can't be."""
    ws = [lin.weight for lin in linears]
    if any(lin.bias is not None for lin in linears) or len({(w.shape[1], w.dtype, w.device) for w in ws}) != 1:
        return False
    with torch.no_grad():
        packed = torch.cat([w.detach() for w in ws])
    row = 0
    for lin, w in zip(linears, ws):
        lin.weight = nn.Parameter(packed[row:row + w.shape[0]], requires_grad=w.requires_grad)
        row += w.shape[0]
    return True


class PackedWeights:
    """The groups zoo.compile packed. Compiled graphs read each group as one buffer (and CUDA graphs bake in
    its address), and Dynamo does not guard on weights aliasing each other, so a group must stay where it
    was packed: `check()` before running turns a replaced weight into an error instead of wrong results."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.groups = []  # [(linears, their weights' addresses)]

    def pack(self, *linears: nn.Linear):
        if pack_linears(*linears):
            self.groups.append((linears, [lin.weight.data_ptr() for lin in linears]))

    def check(self):
        for linears, ptrs in self.groups:
            for lin, ptr in zip(linears, ptrs):
                if lin.weight.data_ptr() != ptr:
                    names = {id(m): name for name, m in self.module.named_modules()}
                    raise RuntimeError(
                        f"{names.get(id(lin), 'a linear')}.weight was replaced after zoo.compile packed it "
                        f"with {', '.join(names.get(id(x), '?').rsplit('.', 1)[-1] for x in linears)}; "
                        "update weights in place (load_state_dict copies into them) or call zoo.compile again")

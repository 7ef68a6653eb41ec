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

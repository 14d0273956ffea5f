"""The paper's equations as plain tensor code: Eq. 2's linear-time FM term, the Bi-Interaction
vector it sums (NFM), and Eq. 1's double loop, kept as the reference the tests hold every faster
kernel to (see `kernels.py`)."""
import torch


def bi_interaction(v: torch.Tensor) -> torch.Tensor:
    """sum_{i<j} v_i * v_j (elementwise), [batch, k], in linear time (Eq. 2 before summing over f)."""
    return 0.5 * (v.sum(dim=1).square() - v.square().sum(dim=1))


def fm_interaction(v: torch.Tensor) -> torch.Tensor:
    """sum_{i<j} <v_i, v_j>, [batch]: the linear-time form of Eq. 2 (and Eq. 7 with v_x)."""
    return bi_interaction(v).sum(dim=1)


def fm_interaction_quadratic(v: torch.Tensor) -> torch.Tensor:
    """The same sum written as the double loop of Eq. 1; O(k h^2), kept for tests."""
    h = v.shape[1]
    total = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
    for i in range(h):
        for j in range(i + 1, h):
            total = total + (v[:, i] * v[:, j]).sum(dim=1)
    return total


def weighted_fm_interaction_reference(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Eq. 7 literally: Eq. 1's double loop on the rescaled embeddings m_i v_i."""
    return fm_interaction_quadratic(m.unsqueeze(-1) * v)


"""Attentional Factorization Machine (Xiao et al. 2017).

Each pair (i, j) of active features gives v_i * v_j; an attention net
(ReLU(W e + b) . h, attention factor 16) weighs the pairs with a softmax, and p
projects the weighted sum. L2 on the attention net W is a separate, strong penalty
(lambda_attention = 2 in the IFM paper).
"""
import itertools

import torch
from torch import nn

from ifm.models.layers import FMBase, glorot_normal_


def pair_products(v: torch.Tensor) -> torch.Tensor:
    """v_i * v_j for every pair i < j in row-major order (as torch.triu_indices), [batch, h(h-1)/2, k]."""
    batch, h, k = v.shape
    out = v.new_empty(batch, h * (h - 1) // 2, k)
    start = 0
    for i in range(h - 1):
        # Broadcast field i against the fields after it: no gathered copies of v.
        torch.mul(v[:, i:i + 1], v[:, i + 1:], out=out[:, start:start + h - 1 - i])
        start += h - 1 - i
    return out


class _AttentionPooling(torch.autograd.Function):
    """sum_p a_p e_p with e = pair_products(v) and a = softmax_p(h . ReLU(W e_p + b)), [batch, k].

    On Frappe (45 pairs of 256-wide products per instance) autograd's version is bound by
    memory traffic: it makes about ten [batch, pairs, k] tensors per step, each larger than
    the CPU's cache. This one works through the batch in chunks whose pair tensors stay in
    cache (about 4 MiB each) and recomputes e in the backward instead of keeping it (the
    attention net's hidden layer, 16 wide, is kept).
    """

    @staticmethod
    def forward(ctx, v, weight, bias, h):
        chunk = _chunk_size(v)
        pooled, attention, hiddens = [], [], []
        for vc in v.split(chunk):
            e = pair_products(vc)                                                  # [chunk, n, k]
            hidden = torch.relu(torch.matmul(e, weight.t()).add_(bias))            # [chunk, n, t]
            a = torch.softmax(torch.matmul(hidden, h), dim=1)                      # [chunk, n]
            pooled.append(torch.bmm(a.unsqueeze(1), e).squeeze(1))
            attention.append(a)
            hiddens.append(hidden)
        ctx.save_for_backward(v, weight, h, torch.cat(attention), torch.cat(hiddens))
        return torch.cat(pooled)

    @staticmethod
    def backward(ctx, grad):
        v, weight, h, attention, hiddens = ctx.saved_tensors
        chunk = _chunk_size(v)
        want_v = ctx.needs_input_grad[0]       # not when the embeddings are frozen (Table 2)
        grad_v = torch.zeros_like(v) if want_v else None
        grad_weight, grad_bias, grad_h = torch.zeros_like(weight), weight.new_zeros(weight.shape[0]), torch.zeros_like(h)
        for vc, gc, a, hidden, grad_vc in zip(v.split(chunk), grad.split(chunk), attention.split(chunk),
                                              hiddens.split(chunk),
                                              grad_v.split(chunk) if want_v else itertools.repeat(None)):
            e = pair_products(vc)
            grad_a = torch.bmm(e, gc.unsqueeze(2)).squeeze(2)                      # [chunk, n]
            grad_score = a * (grad_a - (a * grad_a).sum(dim=1, keepdim=True))      # softmax backward
            grad_h += torch.einsum("bn,bnt->t", grad_score, hidden)
            grad_hidden = (grad_score.unsqueeze(2) * h).mul_(hidden > 0)           # through the ReLU
            flat_hidden = grad_hidden.reshape(-1, grad_hidden.shape[2])
            grad_weight.addmm_(flat_hidden.t(), e.reshape(-1, e.shape[2]))
            grad_bias += flat_hidden.sum(dim=0)
            if not want_v:
                continue
            # d/de_p = W^T grad_hidden_p + a_p * grad, the outer product added in place.
            grad_e = torch.matmul(grad_hidden, weight).addcmul_(a.unsqueeze(2), gc.unsqueeze(1))
            n_fields, start = vc.shape[1], 0
            for i in range(n_fields - 1):   # e_(i,j) = v_i * v_j
                block = grad_e[:, start:start + n_fields - 1 - i]
                grad_vc[:, i] += (block * vc[:, i + 1:]).sum(dim=1)
                grad_vc[:, i + 1:].addcmul_(block, vc[:, i:i + 1])
                start += n_fields - 1 - i
        return grad_v, grad_weight, grad_bias, grad_h


def _chunk_size(v: torch.Tensor, elements: int = 1 << 20) -> int:
    """Instances per chunk so that one pair tensor holds about `elements` numbers (a cache-sized
    block on a CPU). On a GPU the whole batch is one chunk: there the cost is one kernel launch
    per operation and chunk, and memory is plentiful."""
    if v.device.type != "cpu":
        return max(1, v.shape[0])
    pairs = v.shape[1] * (v.shape[1] - 1) // 2
    return max(1, elements // max(1, pairs * v.shape[2]))


def attention_pooling(v, weight, bias, h) -> torch.Tensor:
    return _AttentionPooling.apply(v, weight, bias, h)


def attention_pooling_reference(v, weight, bias, h) -> torch.Tensor:
    """The same function in plain autograd (kept for tests)."""
    rows, cols = torch.triu_indices(v.shape[1], v.shape[1], offset=1)
    e = v[:, rows] * v[:, cols]
    a = torch.softmax(torch.relu(e @ weight.t() + bias) @ h, dim=1)
    return (a.unsqueeze(2) * e).sum(dim=1)


class AFM(FMBase):
    def __init__(self, num_features, num_fields, embedding_size, *, attention_factor: int = 16,
                 dropout: float = 0.5, attention_l2: float = 2.0, init: str = "default", sparse: bool = False):
        super().__init__(num_features, num_fields, embedding_size, sparse)
        self.attention = nn.Linear(embedding_size, attention_factor)
        self.attention_h = nn.Linear(attention_factor, 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.p = nn.Linear(embedding_size, 1, bias=False)
        nn.init.ones_(self.p.weight)  # start from FM: p = [1, ..., 1] (Eq. 8)
        self.attention_l2 = attention_l2
        if init == "code":
            # hexiangnan/attentional_factorization_machine code/AFM.py:216-234: W and b ~
            # N(0, sqrt(2/(A+K))), the attention vector h ~ N(0, 1).
            glorot_normal_(self.attention, attention_factor, embedding_size)
            nn.init.normal_(self.attention_h.weight, std=1.0)
        elif init != "default":
            raise ValueError(f"unknown init {init!r}; choose default or code")

    def forward(self, x):
        """w0 + sum_i w_i + p^T sum_{i<j} a_ij (v_i * v_j) (AFM's Eq. 5)."""
        linear, v = self.linear_term(x), self.embedding(x)
        pooled = attention_pooling(v, self.attention.weight, self.attention.bias, self.attention_h.weight[0])
        return linear + self.p(self.dropout(pooled)).squeeze(-1)

    def l2_groups(self, l2, biases=False):
        # The paper applies its lambda to NFM, Wide&Deep, DeepFM and IFM; AFM has its own on the attention net.
        return [([self.attention.weight], self.attention_l2)]

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

    Autograd's version is bound by memory traffic: it keeps about ten [batch, pairs, width] tensors
    per step (width k for the products, t for the attention net's hidden layer), each larger than a
    CPU's cache (Frappe: 45 pairs; k = 256, t = 16 in the paper; k = 10, t = 128 under BARS). This
    one works through the batch in chunks whose widest tensor stays in cache (about 4 MiB) and
    recomputes e in the backward. The hidden layer is kept where it is narrow (t <= k) and
    recomputed from e where it is wide, which costs a product with an inner size of only k; its
    two products with W are then taken in the orientation a BLAS does fast for that shape (with
    k = 10 and t = 128, about 5x faster than the other one).
    """

    @staticmethod
    def forward(ctx, v, weight, bias, h, keep):
        wide, chunk = weight.shape[0] > weight.shape[1], _chunk_size(v, weight.shape[0])
        pooled, attention, hiddens = [], [], []
        for vc, kc in zip(v.split(chunk), itertools.repeat(None) if keep is None else keep.split(chunk)):
            e = pair_products(vc)                                                  # [chunk, n, k]
            hidden = _hidden(e, weight, bias)                                      # [chunk * n, t]
            a = torch.softmax(torch.mv(hidden, h).view(e.shape[:2]), dim=1)        # [chunk, n]
            pooled.append(torch.bmm((a if kc is None else a * kc).unsqueeze(1), e).squeeze(1))
            attention.append(a)
            hiddens += [] if wide else [hidden]
        ctx.save_for_backward(v, weight, bias, h, torch.cat(attention), keep, None if wide else torch.cat(hiddens))
        return torch.cat(pooled)

    @staticmethod
    def backward(ctx, grad):
        v, weight, bias, h, attention, keep, hiddens = ctx.saved_tensors
        wide, chunk, pairs = hiddens is None, _chunk_size(v, weight.shape[0]), attention.shape[1]
        want_v = ctx.needs_input_grad[0]       # not when the embeddings are frozen (Table 2)
        grad_v = torch.zeros_like(v) if want_v else None
        grad_weight = weight.new_zeros(weight.shape[::-1] if wide else weight.shape)    # wide: W^T's, contiguous
        grad_bias, grad_h = torch.zeros_like(bias), torch.zeros_like(h)
        none = itertools.repeat(None)
        for vc, gc, a, kc, kept, grad_vc in zip(v.split(chunk), grad.split(chunk), attention.split(chunk),
                                                none if keep is None else keep.split(chunk),
                                                none if wide else hiddens.split(chunk * pairs),
                                                none if grad_v is None else grad_v.split(chunk)):
            e = pair_products(vc)
            flat_e = e.reshape(-1, e.shape[2])
            hidden = _hidden(e, weight, bias) if wide else kept
            grad_a = torch.bmm(e, gc.unsqueeze(2)).squeeze(2)                      # [chunk, n]
            if kc is not None:      # the pooled sum took the dropped-out weights a * keep
                grad_a.mul_(kc)
            grad_score = (a * (grad_a - (a * grad_a).sum(dim=1, keepdim=True))).reshape(-1)   # softmax backward
            grad_h.addmv_(hidden.t(), grad_score)
            # Through the ReLU with autograd's own kernel for it: ten times faster than a mask and a multiply.
            grad_hidden = torch.ops.aten.threshold_backward(torch.outer(grad_score, h), hidden, 0)   # [chunk * n, t]
            grad_bias += grad_hidden.sum(dim=0)
            if wide:    # dL/dW^T = e^T G and dL/de = (W^T G^T)^T
                grad_weight.addmm_(flat_e.t(), grad_hidden)
                grad_e = torch.mm(weight.t(), grad_hidden.t()).t().reshape(e.shape) if want_v else None
            else:       # dL/dW = G^T e and dL/de = G W
                grad_weight.addmm_(grad_hidden.t(), flat_e)
                grad_e = torch.mm(grad_hidden, weight).view_as(e) if want_v else None
            if not want_v:
                continue
            grad_e.addcmul_((a if kc is None else a * kc).unsqueeze(2), gc.unsqueeze(1))   # + a_p * grad: d/de_p in full
            n_fields, start = vc.shape[1], 0
            for f in range(n_fields - 1):   # e_(f,j) = v_f * v_j
                block = grad_e[:, start:start + n_fields - 1 - f]
                grad_vc[:, f] += (block * vc[:, f + 1:]).sum(dim=1)
                grad_vc[:, f + 1:].addcmul_(block, vc[:, f:f + 1])
                start += n_fields - 1 - f
        return grad_v, grad_weight.t() if wide else grad_weight, grad_bias, grad_h, None


def _hidden(e: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """ReLU(W e_p + b) for every pair of the chunk, [chunk * n, t]."""
    return torch.addmm(bias, e.reshape(-1, e.shape[2]), weight.t()).relu_()


def _chunk_size(v: torch.Tensor, attention_factor: int = 0, elements: int = 1 << 20) -> int:
    """Instances per chunk so that the chunk's widest tensor (the pair products, k wide, or the
    attention net's hidden layer, t wide) holds about `elements` numbers: a cache-sized block on a
    CPU. On a GPU the whole batch is one chunk: there the cost is one kernel launch per operation
    and chunk, and memory is plentiful."""
    if v.device.type != "cpu":
        return max(1, v.shape[0])
    pairs = v.shape[1] * (v.shape[1] - 1) // 2
    return max(1, elements // max(1, pairs * max(v.shape[2], attention_factor)))


def attention_pooling(v, weight, bias, h, keep=None) -> torch.Tensor:
    """`keep` ([batch, n], 0 or 1/(1-q)): the dropout mask of the attention weights, or None."""
    return _AttentionPooling.apply(v, weight, bias, h, keep)


def attention_pooling_reference(v, weight, bias, h, keep=None) -> torch.Tensor:
    """The same function in plain autograd (kept for tests)."""
    rows, cols = torch.triu_indices(v.shape[1], v.shape[1], offset=1)
    e = v[:, rows] * v[:, cols]
    a = torch.softmax(torch.relu(e @ weight.t() + bias) @ h, dim=1)
    return ((a if keep is None else a * keep).unsqueeze(2) * e).sum(dim=1)


class AFM(FMBase):
    def __init__(self, num_features, num_fields, embedding_size, *, attention_factor: int = 16,
                 dropout: float = 0.5, weight_dropout: float = 0.0, attention_l2: float = 2.0, init: str = "default",
                 sparse: bool = False):
        super().__init__(num_features, num_fields, embedding_size, sparse)
        self.attention = nn.Linear(embedding_size, attention_factor)
        self.attention_h = nn.Linear(attention_factor, 1, bias=False)
        self.dropout = nn.Dropout(dropout)              # on the pooled vector (the AFM code's keep[1])
        # On the attention weights a_ij, after the softmax (FuxiCTR's attention_dropout[0], reczoo/FuxiCTR
        # fuxictr/pytorch/models/AFM.py:62-64 @09b6feb); 0 in the papers' AFM.
        self.weight_dropout = weight_dropout
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
        pairs = self.num_fields * (self.num_fields - 1) // 2
        keep = nn.functional.dropout(v.new_ones(len(v), pairs), self.weight_dropout) \
            if self.training and self.weight_dropout > 0 else None
        pooled = attention_pooling(v, self.attention.weight, self.attention.bias, self.attention_h.weight[0], keep)
        return linear + self.p(self.dropout(pooled)).squeeze(-1)

    def l2_groups(self, l2, biases=False):
        # The paper applies its lambda to NFM, Wide&Deep, DeepFM and IFM; AFM has its own on the attention net.
        return [([self.attention.weight], self.attention_l2)]

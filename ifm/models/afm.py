"""Attentional Factorization Machine (Xiao et al. 2017).

Each pair (i, j) of active features gives v_i * v_j; an attention net
(ReLU(W e + b) . h, attention factor 16) weighs the pairs with a softmax, and p
projects the weighted sum. L2 on the attention net W is a separate, strong penalty
(lambda_attention = 2 in the IFM paper).
"""
import torch
from torch import nn

from ifm.models.layers import FMBase


class AFM(FMBase):
    def __init__(self, num_features, num_fields, embedding_size, *, attention_factor: int = 16,
                 dropout: float = 0.5, attention_l2: float = 2.0, sparse: bool = False):
        super().__init__(num_features, num_fields, embedding_size, sparse)
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("pair_i", rows, persistent=False)
        self.register_buffer("pair_j", cols, persistent=False)
        self.attention = nn.Linear(embedding_size, attention_factor)
        self.attention_h = nn.Linear(attention_factor, 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.p = nn.Linear(embedding_size, 1, bias=False)
        nn.init.ones_(self.p.weight)  # start from FM: p = [1, ..., 1] (Eq. 8)
        self.attention_l2 = attention_l2

    def forward(self, x):
        linear, v = self.fm_parts(x)
        pairs = v[:, self.pair_i] * v[:, self.pair_j]                      # [batch, h(h-1)/2, k]
        scores = self.attention_h(torch.relu(self.attention(pairs)))       # [batch, pairs, 1]
        pooled = (torch.softmax(scores, dim=1) * pairs).sum(dim=1)         # [batch, k]
        return linear + self.p(self.dropout(pooled)).squeeze(-1)

    def l2_groups(self, l2):
        # The paper applies its lambda to NFM, Wide&Deep, DeepFM and IFM; AFM has its own on the attention net.
        return [([self.attention.weight], self.attention_l2)]

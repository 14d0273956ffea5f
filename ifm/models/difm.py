"""Dual Input-aware Factorization Machine (Lu, Yu, Chang, Wang, Li and Yuan, IJCAI 2020, pp. 3139-3145).

IFM's FEN becomes two factor estimating networks on the stacked embeddings E_x = [v_x1; ...; v_xh]
(the paper's Dual-FEN layer), whose outputs are added; the factors then reweight w_i and v_i exactly
as in IFM (its Reweighting and prediction layers):

  vector-wise part: per head a = 1..H, Q_a = E_x W_Q^a, K_a = E_x W_K^a, V_a = E_x W_V^a (W^a: k x d),
      head_a = softmax_j(Q_a K_a^T / sqrt(d)) V_a                     [h, d]  (multi-head self-attention)
      O_vec = ReLU([head_1, ..., head_H] + E_x W_Res)                 [h, H d] (residual network)
      m_vec = P_vec flatten(O_vec)                                    [h]
  bit-wise part:    m_bit = P_bit MLP(flatten(E_x))                   [h]
  combination:      m_x = m_vec + m_bit       (no softmax and no scaling to h, unlike IFM's Eq. 5)
  prediction:       y = w0 + sum_i m_x,i w_i + sum_{i<j} <m_x,i v_i, m_x,j v_j>   (IFM's Eqs. 6-7)

Which public code each setting follows. DeepCTR-Torch (shenweichen/DeepCTR-Torch): models/difm.py at
32d8155 and layers/interaction.py (InteractingLayer) at b4d8181; DeepCTR (shenweichen/DeepCTR):
models/difm.py at 0df401c.
- m_x = m_vec + m_bit: difm.py:96 (DeepCTR's difm.py:69 alike); P_vec, P_bit without bias: difm.py:65-68.
  PaddleRec's models/rank/difm/net.py (DIFM.forward) takes softmax(m_vec + m_bit) instead; not followed.
- 4 heads of size k / 4, the residual on: difm.py:40-41, interaction.py:349; scores over sqrt(d):
  difm.py:56, interaction.py:383-384; ReLU after the residual sum: interaction.py:390-392; no layer norm.
  DeepCTR's TensorFlow model has 8 heads of size 8 whatever k (its difm.py:20): ``attention_size``.
- MLP 256-128, ReLU, no dropout, no batch norm: difm.py:41-44 (Linear, [BN], activation, dropout per
  layer, as ``mlp``); at least one layer: difm.py:49-50.
- W_Q, W_K, W_V, W_Res ~ N(0, 0.05): interaction.py:361-362; the MLP and P: torch's default init.
- L2 on the weights of both FENs and of P_vec, P_bit: difm.py:70-77 (``regularized``).
- No FM pre-training (not in PRETRAINED_WITH_FM): neither library nor PaddleRec pre-trains.
The paper's own text (its equation numbers, its settings, whether it pre-trains) could not be read from
this session: only its abstract (doi:10.24963/IJCAI.2020/434), which names the same parts (multi-head
self-attention, residual networks and DNNs reweighting the features bit-wise and vector-wise). The form
above is the libraries' and should be checked against the PDF.
"""
import math

import torch
from torch import nn

from ifm.models.kernels import StackedInputs
from ifm.models.layers import InputAwareFM, linear_biases, linear_weights, mlp


class DIFM(InputAwareFM):
    def __init__(self, num_features, num_fields, embedding_size, *, attention_heads: int = 4,
                 attention_size: int | None = None, residual: bool = True, hidden=(256, 128),
                 activation: str = "relu", dropout=0.0, batch_norm: bool = False, sparse: bool = False):
        super().__init__(num_features, num_fields, embedding_size, sparse)
        if attention_size is None:               # interaction.py:345-349: heads split the embedding
            if attention_heads < 1 or embedding_size % attention_heads:
                raise ValueError(f"{attention_heads} attention heads do not split embedding size {embedding_size}; "
                                 "give attention_size (each head's width) or another attention_heads")
            attention_size = embedding_size // attention_heads
        if not hidden:
            raise ValueError("the bit-wise FEN needs at least one hidden layer")
        self.heads, self.head_size = attention_heads, attention_size
        width = attention_heads * attention_size
        # Vector-wise part: W_Q, W_K, W_V, W_Res of all heads side by side, k x (H d) each.
        names = ["query", "key", "value"] + (["residual"] if residual else [])
        self.attention = nn.ModuleDict({n: nn.Linear(embedding_size, width, bias=False) for n in names})
        for layer in self.attention.values():
            nn.init.normal_(layer.weight, std=0.05)
        self.P_vec = nn.Linear(num_fields * width, num_fields, bias=False)
        # Bit-wise part: IFM's FEN (an MLP on the concatenated embeddings) and its P.
        self.bit = mlp(num_fields * embedding_size, list(hidden), activation=activation, dropout=dropout,
                       batch_norm=batch_norm)
        self.P_bit = nn.Linear(list(hidden)[-1], num_fields, bias=False)

    def stacked_input_layer(self):
        return self.bit[0]

    def vector_wise(self, v: torch.Tensor) -> torch.Tensor:
        """O_vec = ReLU([head_1, ..., head_H] + E_x W_Res), [batch, h, H d], from v = E_x [batch, h, k]."""
        batch, h, _ = v.shape

        def per_head(name):                      # E_x W^a of every head a, [batch, h, H, d]
            return self.attention[name](v).view(batch, h, self.heads, self.head_size)

        q, k, values = per_head("query"), per_head("key"), per_head("value")
        weights = torch.softmax(torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(self.head_size), dim=-1)
        out = torch.einsum("bhij,bjhd->bihd", weights, values).reshape(batch, h, -1)
        if "residual" in self.attention:
            out = out + self.attention["residual"](v)
        return torch.relu(out)

    def _factors(self, inputs):
        """m_x = P_vec flatten(O_vec) + P_bit MLP(flatten(E_x)), [batch, h]."""
        v = inputs.v if isinstance(inputs, StackedInputs) else self.embedding(inputs.x)
        return self.P_vec(self.vector_wise(v).flatten(start_dim=1)) + self.P_bit(inputs.mlp(self.bit))

    def regularized(self, biases=False):
        # difm.py:70-77: the weights of the attention, of the MLP, and P_vec, P_bit (not w, v).
        weights = linear_weights(self.attention) + linear_weights(self.bit) + [self.P_vec.weight, self.P_bit.weight]
        return weights + (linear_biases(self.bit) if biases else [])

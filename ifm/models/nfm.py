"""Neural Factorization Machine (He & Chua 2017).

Bi-interaction pooling of the embeddings, then an MLP (one hidden layer of 512 in the
IFM paper), then a linear projection, added to the FM linear term. Batch norm and the
dropout pair follow the NFM authors' published run command (--keep_prob [0.8,0.5]
--batch_norm 1) read as their NeuralFM.py reads it: the LAST keep_prob belongs to the
Bi-Interaction layer (NeuralFM.py:123-124), the others to the hidden layers in order
(NeuralFM.py:128-132). So dropout 0.5 on the pooled vector and 0.2 on the hidden layer.
"""
from torch import nn

from ifm.models.equations import bi_interaction
from ifm.models.layers import FMBase, glorot_normal_, glorot_normal_mlp_, linear_biases, linear_weights, mlp


class NFM(FMBase):
    def __init__(self, num_features, num_fields, embedding_size, *, hidden=(512,), pool_dropout: float = 0.5,
                 dropout: float = 0.2, activation: str = "relu", batch_norm: bool = True, init: str = "default",
                 sparse: bool = False):
        super().__init__(num_features, num_fields, embedding_size, sparse)
        # Batch norm with TensorFlow's eps (1e-3) and decay 0.9 (torch momentum 0.1), NeuralFM.py:220-226, on the
        # pooled vector and after each hidden layer. batch_norm=False: neither, as FuxiCTR's NFM with its
        # batch_norm False (reczoo/FuxiCTR fuxictr/pytorch/models/NFM.py:47-54@09b6feb), BARS's chosen run.
        bn = [nn.BatchNorm1d(embedding_size, eps=1e-3)] if batch_norm else []
        self.pool = nn.Sequential(*bn, nn.Dropout(pool_dropout))
        self.dnn = mlp(embedding_size, hidden, activation=activation, dropout=dropout, batch_norm=batch_norm,
                       bn_eps=1e-3)
        last = hidden[-1] if hidden else embedding_size
        self.out = nn.Linear(last, 1, bias=False)
        if init == "code":
            glorot_normal_mlp_(self.dnn, first_fan_in=embedding_size)     # NeuralFM.py:204-212
            if hidden:
                glorot_normal_(self.out, last, 1)                         # NeuralFM.py:214-215
            else:
                nn.init.ones_(self.out.weight)                            # NeuralFM.py:216-217
        elif init != "default":
            raise ValueError(f"unknown init {init!r}; choose default or code")

    def forward(self, x):
        """w0 + sum_i w_i + h^T MLP(pool(f_BI(V_x))), f_BI = sum_{i<j} v_i * v_j (NFM's Eqs. 3-4)."""
        return self.linear_term(x) + self.out(self.dnn(self.pool(bi_interaction(self.embedding(x))))).squeeze(-1)

    def regularized(self, biases=False):
        return linear_weights(self.dnn) + [self.out.weight] + (linear_biases(self.dnn) if biases else [])

"""Neural Factorization Machine (He & Chua 2017).

Bi-interaction pooling of the embeddings, then an MLP (one hidden layer of 512 in the
IFM paper), then a linear projection, added to the FM linear term. Batch norm and
the dropout pair (0.2 on the pooled vector, 0.5 on the hidden layer) follow the
NFM authors' published run command (--keep_prob [0.8,0.5] --batch_norm 1).
"""
from torch import nn

from ifm.models.layers import FMBase, bi_interaction, linear_weights, mlp


class NFM(FMBase):
    def __init__(self, num_features, num_fields, embedding_size, *, hidden=(512,), pool_dropout: float = 0.2,
                 dropout: float = 0.5, activation: str = "relu", sparse: bool = False):
        super().__init__(num_features, num_fields, embedding_size, sparse)
        self.pool = nn.Sequential(nn.BatchNorm1d(embedding_size), nn.Dropout(pool_dropout))
        self.dnn = mlp(embedding_size, hidden, activation=activation, dropout=dropout, batch_norm=True)
        self.out = nn.Linear(hidden[-1] if hidden else embedding_size, 1, bias=False)

    def forward(self, x):
        linear, v = self.fm_parts(x)
        return linear + self.out(self.dnn(self.pool(bi_interaction(v)))).squeeze(-1)

    def regularized(self):
        return linear_weights(self.dnn) + [self.out.weight]

"""DeepFM (Guo et al. 2017): FM plus an MLP (200-200-200 in the IFM paper) over the
concatenated embeddings, both reading the same embeddings."""
from torch import nn

from ifm.models.layers import FMBase, fm_interaction, linear_weights, mlp


class DeepFM(FMBase):
    def __init__(self, num_features, num_fields, embedding_size, *, hidden=(200, 200, 200), dropout: float = 0.5,
                 activation: str = "relu", sparse: bool = False):
        super().__init__(num_features, num_fields, embedding_size, sparse)
        self.dnn = mlp(num_fields * embedding_size, hidden, activation=activation, dropout=dropout)
        self.out = nn.Linear(hidden[-1], 1)

    def forward(self, x):
        linear, v = self.fm_parts(x)
        deep = self.out(self.dnn(v.flatten(start_dim=1))).squeeze(-1)
        return linear + fm_interaction(v) + deep

    def regularized(self):
        return linear_weights(self.dnn) + [self.out.weight]

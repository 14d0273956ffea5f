"""DeepFM (Guo et al. 2017): FM plus an MLP (200-200-200 in the IFM paper) over the
concatenated embeddings, both reading the same embeddings."""
from torch import nn

from ifm.models.layers import FMBase, linear_weights, mlp


class DeepFM(FMBase):
    def __init__(self, num_features, num_fields, embedding_size, *, hidden=(200, 200, 200), dropout: float = 0.5,
                 activation: str = "relu", sparse: bool = False):
        super().__init__(num_features, num_fields, embedding_size, sparse)
        self.dnn = mlp(num_fields * embedding_size, hidden, activation=activation, dropout=dropout)
        self.out = nn.Linear(hidden[-1], 1)

    def stacked_input_layer(self):
        return self.dnn[0]

    def forward(self, x):
        v = self.stacked_embeddings(x)
        deep = self.out(self.mlp_on_stacked(self.dnn, x, v)).squeeze(-1)
        return self.linear.bias + self.linear(x).sum(dim=1) + self.interaction(x, v) + deep

    def regularized(self):
        return linear_weights(self.dnn) + [self.out.weight]

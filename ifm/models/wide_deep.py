"""Wide & Deep (Cheng et al. 2016): a linear model (wide) plus an MLP (1024-512-256 in
the IFM paper) over the concatenated embeddings (deep). No FM interaction term."""
from torch import nn

from ifm.models.layers import FMBase, linear_weights, mlp


class WideDeep(FMBase):
    def __init__(self, num_features, num_fields, embedding_size, *, hidden=(1024, 512, 256), dropout: float = 0.5,
                 activation: str = "relu", sparse: bool = False):
        super().__init__(num_features, num_fields, embedding_size, sparse)
        self.dnn = mlp(num_fields * embedding_size, hidden, activation=activation, dropout=dropout)
        self.out = nn.Linear(hidden[-1], 1)

    def stacked_input_layer(self):
        return self.dnn[0]

    def forward(self, x):
        wide = self.linear.bias + self.linear(x).sum(dim=1)
        return wide + self.out(self.mlp_on_stacked(self.dnn, x, self.stacked_embeddings(x))).squeeze(-1)

    def regularized(self):
        return linear_weights(self.dnn) + [self.out.weight]

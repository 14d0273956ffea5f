"""Wide & Deep (Cheng et al. 2016): a linear model (wide) plus an MLP (1024-512-256 in
the IFM paper) over the concatenated embeddings (deep). No FM interaction term."""
from torch import nn

from ifm.models.layers import FMBase, linear_biases, linear_weights, mlp


class WideDeep(FMBase):
    default_hidden = (1024, 512, 256)

    def __init__(self, num_features, num_fields, embedding_size, *, hidden=None, dropout: float = 0.5,
                 activation: str = "relu", batch_norm: bool = False, sparse: bool = False):
        super().__init__(num_features, num_fields, embedding_size, sparse)
        hidden = tuple(hidden or self.default_hidden)
        # batch_norm: after each hidden layer, as the open benchmark's DeepFM (BARS Frappe_x1 batch_norm: true)
        self.dnn = mlp(num_fields * embedding_size, hidden, activation=activation, dropout=dropout,
                       batch_norm=batch_norm)
        self.out = nn.Linear(hidden[-1], 1)

    def stacked_input_layer(self):
        return self.dnn[0]

    def wide_and_deep(self, x, inputs):
        """w0 + sum_i w_i (wide) plus out(MLP(concatenated v)) (deep)."""
        return self.linear_term(x) + self.out(inputs.mlp(self.dnn)).squeeze(-1)

    def forward(self, x):
        return self.wide_and_deep(x, self.inputs(x))

    def regularized(self, biases=False):
        return linear_weights(self.dnn) + [self.out.weight] + (linear_biases(self.dnn) if biases else [])

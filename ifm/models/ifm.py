"""Input-aware Factorization Machine (Yu et al. 2019, Eqs. 3-7).

The Factor Estimating Network (FEN) reads the stacked embeddings V_x of the active
features and outputs one factor m_x,i per active feature; the factors rescale both
w_i and v_i before the FM prediction layer.

Options beyond the paper's text are the authors' released code (gulyfish/Input-aware-
Factorization-Machine, code/IFM.py at 00e3703): batch norm after each FEN layer
(l.91-101, 226-232), dropout on the pooled interaction vector (l.123), their init
(l.201-222) and FEN sizes (l.27).
"""
import torch
from torch import nn

from ifm.models.kernels import Dropout
from ifm.models.layers import InputAwareFM, glorot_normal_, glorot_normal_mlp_, linear_biases, linear_weights, mlp


class IFM(InputAwareFM):
    def __init__(self, num_features, num_fields, embedding_size, *, fen_layers: int = 2, fen_width: int = 256,
                 fen_sizes=None, activation: str = "relu", dropout=0.3, batch_norm: bool = False,
                 interaction_dropout: float = 0.0, init: str = "default", sparse: bool = False):
        super().__init__(num_features, num_fields, embedding_size, sparse)
        sizes = list(fen_sizes) if fen_sizes else [fen_width] * fen_layers
        if isinstance(dropout, (list, tuple)):   # one rate per layer, the last one repeating
            dropout = [dropout[min(i, len(dropout) - 1)] for i in range(len(sizes))]
        # Eq. 4: L fully connected layers on V_x (k*h inputs); batch norm with TensorFlow's eps.
        self.fen = mlp(num_fields * embedding_size, sizes, activation=activation, dropout=dropout,
                       batch_norm=batch_norm, bn_eps=1e-3)
        # Eq. 5: P in R^{t x h}, no bias.
        fen_out = sizes[-1] if sizes else num_fields * embedding_size
        self.P = nn.Linear(fen_out, num_fields, bias=False)
        if interaction_dropout > 0:
            self.pool = Dropout(interaction_dropout)
        if init == "code":
            # IFM.py:201-206: the first layer's std uses k + t1, not the layer's h*k inputs.
            glorot_normal_mlp_(self.fen, first_fan_in=embedding_size)
            glorot_normal_(self.P, fen_out, 1)                          # IFM.py:220-222
        elif init != "default":
            raise ValueError(f"unknown init {init!r}; choose default or code")

    def stacked_input_layer(self):
        return self.fen[0] if len(self.fen) else None

    def _factors(self, inputs):
        """m_x = h * softmax(U_x P) (Eq. 5) with U_x = FEN(V_x) (Eq. 4), [batch, h]: each instance's sum to h."""
        return self.num_fields * torch.softmax(self.P(inputs.mlp(self.fen)), dim=1)

    def regularized(self, biases=False):
        # Eq. 10: lambda * ||Phi||^2 with Phi = {W, P} of the FEN only (the code adds the FEN biases).
        return linear_weights(self.fen) + [self.P.weight] + (linear_biases(self.fen) if biases else [])

"""Input-aware Factorization Machine (Yu et al. 2019, Eqs. 3-7).

The Factor Estimating Network (FEN) reads the stacked embeddings V_x of the active
features and outputs one factor m_x,i per active feature; the factors rescale both
w_i and v_i before the FM prediction layer.
"""
import torch
from torch import nn

from ifm.models.layers import FMBase, linear_weights, mlp


class IFM(FMBase):
    def __init__(self, num_features, num_fields, embedding_size, *, fen_layers: int = 2,
                 fen_width: int = 256, activation: str = "relu", dropout: float = 0.3, sparse: bool = False):
        super().__init__(num_features, num_fields, embedding_size, sparse)
        # Eq. 4: L fully connected layers on V_x (k*h inputs), t = fen_width outputs each.
        self.fen = mlp(num_fields * embedding_size, [fen_width] * fen_layers, activation=activation, dropout=dropout)
        # Eq. 5: P in R^{t x h}, no bias.
        fen_out = fen_width if fen_layers > 0 else num_fields * embedding_size
        self.P = nn.Linear(fen_out, num_fields, bias=False)

    def stacked_input_layer(self):
        return self.fen[0] if len(self.fen) else None

    def _factors(self, x, v):
        """m_x = h * softmax(U_x P) (Eq. 5), [batch, h]; the factors of each instance sum to h."""
        return self.num_fields * torch.softmax(self.P(self.mlp_on_stacked(self.fen, x, v)), dim=1)

    def factors(self, x: torch.Tensor) -> torch.Tensor:
        """Input-aware factors m_x,i of the active features of each instance in x (Table 1)."""
        return self._factors(x, self.stacked_embeddings(x))

    def forward_with_factors(self, x, m=None):
        """Prediction given factors m (computed by the FEN when None): Eqs. 6 and 7."""
        v = self.stacked_embeddings(x)
        if m is None:
            m = self._factors(x, v)
        return self.linear.bias + (m * self.linear(x)).sum(dim=1) + self.interaction(x, v, m)

    def forward(self, x):
        return self.forward_with_factors(x)

    def regularized(self):
        # Eq. 10: lambda * ||Phi||^2 with Phi = {W, P} of the FEN only.
        return linear_weights(self.fen) + [self.P.weight]

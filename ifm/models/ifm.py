"""Input-aware Factorization Machine (Yu et al. 2019, Eqs. 3-7).

The Factor Estimating Network (FEN) reads the stacked embeddings V_x of the active
features and outputs one factor m_x,i per active feature; the factors rescale both
w_i and v_i before the FM prediction layer.
"""
import torch
from torch import nn

from ifm.models.layers import FMBase, linear_weights, mlp, weighted_fm_interaction


class IFM(FMBase):
    def __init__(self, num_features, num_fields, embedding_size, *, fen_layers: int = 2,
                 fen_width: int = 256, activation: str = "relu", dropout: float = 0.3, sparse: bool = False):
        super().__init__(num_features, num_fields, embedding_size, sparse)
        # Eq. 4: L fully connected layers on V_x (k*h inputs), t = fen_width outputs each.
        self.fen = mlp(num_fields * embedding_size, [fen_width] * fen_layers, activation=activation, dropout=dropout)
        # Eq. 5: P in R^{t x h}, no bias.
        fen_out = fen_width if fen_layers > 0 else num_fields * embedding_size
        self.P = nn.Linear(fen_out, num_fields, bias=False)

        self.register_buffer("compact_id", None, persistent=False)

    def use_feature_fields(self, x_all: torch.Tensor) -> bool:
        """Learn which features occur in which field, from every instance the model will see, so
        that batches can be computed per feature instead of per instance (see _per_feature).

        Returns whether that path is on: it needs a dense table, an FEN with a hidden layer, and
        every feature in one field only (true of the libfm data, where ids are per field).
        """
        columns = [torch.unique(x_all[:, j]) for j in range(self.num_fields)]
        ids = torch.cat(columns)
        if self.embedding.sparse or len(self.fen) == 0 or len(torch.unique(ids)) != len(ids):
            self.compact_id = None
            return False
        compact = torch.full((self.embedding.weight.shape[0],), -1, dtype=torch.long)
        compact[ids] = torch.arange(len(ids))
        self.field_ids = ids.to(self.embedding.weight.device)
        self.field_sizes = [len(c) for c in columns]
        self.compact_id = compact.to(self.embedding.weight.device)
        return True

    def _per_feature(self, x: torch.Tensor) -> bool:
        """Whether this batch stacks more rows than the table has features: then per-feature wins."""
        return self.compact_id is not None and x.shape[0] * self.num_fields > len(self.field_ids)

    def _first_layer_per_feature(self, x: torch.Tensor) -> torch.Tensor:
        """fen[0](V_x) = W1 V_x + b1 = sum_j (W1_j v_{x_j}) + b1, W1_j being the columns of W1 that
        read field j. Projecting every feature once, T_f = W1_{field(f)} v_f, and summing T over
        each instance's features is the same function; with fewer features than stacked rows
        (Frappe: 5,382 against 2,048 x 10) it costs a quarter of the matrix products."""
        first, k = self.fen[0], self.embedding.weight.shape[1]
        # One gather of the used rows, split by field: its backward is a single concatenation.
        per_field = self.embedding.weight.index_select(0, self.field_ids).split(self.field_sizes)
        projected = torch.cat([v @ first.weight[:, j * k:(j + 1) * k].t() for j, v in enumerate(per_field)])
        return nn.functional.embedding_bag(self.compact_id[x], projected, mode="sum") + first.bias

    def factors_from_embeddings(self, v: torch.Tensor) -> torch.Tensor:
        """m_x = h * softmax(U_x P) (Eq. 5), [batch, h]; the factors of each instance sum to h."""
        return self.num_fields * torch.softmax(self.P(self.fen(v.flatten(start_dim=1))), dim=1)

    def factors(self, x: torch.Tensor) -> torch.Tensor:
        """Input-aware factors m_x,i of the active features of each instance in x (Table 1)."""
        if self._per_feature(x):
            return self.num_fields * torch.softmax(self.P(self.fen[1:](self._first_layer_per_feature(x))), dim=1)
        return self.factors_from_embeddings(self.embedding(x))

    def forward_with_factors(self, x, m=None):
        """Prediction given factors m (computed by the FEN when None): Eqs. 6 and 7."""
        if m is None and self._per_feature(x):
            return self._forward_per_feature(x)
        v = self.embedding(x)
        if m is None:
            m = self.factors_from_embeddings(v)
        w = self.linear(x)
        return self.linear.bias + (m * w).sum(dim=1) + weighted_fm_interaction(v, m)

    def _forward_per_feature(self, x):
        """The same prediction with no [batch, h, k] tensor: the FEN's first layer per feature, and
        Eq. 7 as 1/2 (||sum_j m_j v_j||^2 - sum_j m_j^2 ||v_j||^2), where sum_j m_j v_j is one
        weighted embedding bag and ||v_j||^2 is computed once per feature."""
        m = self.factors(x)
        table = self.embedding.weight
        weighted_sum = nn.functional.embedding_bag(x, table, mode="sum", per_sample_weights=m)
        norms = table.square().sum(dim=1)[x]
        interaction = 0.5 * (weighted_sum.square().sum(dim=1) - (m.square() * norms).sum(dim=1))
        return self.linear.bias + (m * self.linear(x)).sum(dim=1) + interaction

    def forward(self, x):
        return self.forward_with_factors(x)

    def regularized(self):
        # Eq. 10: lambda * ||Phi||^2 with Phi = {W, P} of the FEN only.
        return linear_weights(self.fen) + [self.P.weight]

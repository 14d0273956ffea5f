"""Speed kernels: the same functions as the equations in `equations.py`, computed faster, each
with the plain formula it must equal beside it (the tests hold every kernel to its reference,
values and gradients, on both computation paths).

- `gather_rows`: table[x] with a dense index_add_ backward   (reference: table[x])
- `weighted_fm_interaction`: Eq. 7's sum with a hand-written backward
                                              (reference: fm_interaction_quadratic(m * v))
- `Dropout`: inverted dropout drawing a quarter of torch's random words
                                              (reference: torch.nn.Dropout)
- `PerFeatureLayout`, `StackedInputs`, `PerFeatureInputs`: the two computation paths of a
  model's inputs; `FMBase.inputs(x)` is the one place that chooses between them.
"""
import torch
from torch import nn

from ifm.models.equations import bi_interaction, fm_interaction


class _GatherRows(torch.autograd.Function):
    """table[x] whose backward sums the row gradients with one index_add_ into a dense tensor.

    For tables no larger than the rows a batch touches (Frappe: 5,382 x 256 against
    2,048 x 10 rows) this dense gradient plus a dense Adagrad step is about twice as fast
    on CPU as torch's sparse gradient, which sorts and coalesces every step.
    """

    @staticmethod
    def forward(ctx, table, x):
        ctx.save_for_backward(x)
        ctx.table_shape = table.shape
        # index_select is several times faster than table[x] (advanced indexing) on CPU.
        return table.index_select(0, x.reshape(-1)).view(*x.shape, table.shape[1])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        rows = grad.reshape(-1, ctx.table_shape[1])
        return grad.new_zeros(ctx.table_shape).index_add_(0, x.reshape(-1), rows), None


def gather_rows(table: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """table[x], [batch, h, width], with the dense row-gradient backward."""
    return _GatherRows.apply(table, x)


class _WeightedInteraction(torch.autograd.Function):
    """sum_{i<j} m_i m_j <v_i, v_j> = 1/2 (||sum_j m_j v_j||^2 - sum_j m_j^2 ||v_j||^2), with a
    hand-written backward: autograd's version of this formula makes several [batch, h, k]
    temporaries; this one makes one (dv), which matters because the embeddings are by far the
    largest activations of IFM.
    """

    @staticmethod
    def forward(ctx, v, m):
        weighted_sum = torch.einsum("bh,bhk->bk", m, v)                   # sum_j m_j v_j, [batch, k]
        norms = torch.linalg.vector_norm(v, dim=2).square()              # ||v_j||^2, [batch, h]
        ctx.save_for_backward(v, m, weighted_sum, norms)
        return 0.5 * (weighted_sum.square().sum(dim=1) - (m.square() * norms).sum(dim=1))

    @staticmethod
    def backward(ctx, grad):
        v, m, weighted_sum, norms = ctx.saved_tensors
        grad_sum = grad.unsqueeze(1) * weighted_sum                        # d/d(sum_j m_j v_j), [batch, k]
        grad_m = torch.einsum("bhk,bk->bh", v, grad_sum) - grad.unsqueeze(1) * m * norms
        # d/dv_j = m_j * grad_sum - grad * m_j^2 * v_j
        grad_v = (m.unsqueeze(2) * grad_sum.unsqueeze(1)).addcmul_(v, (-grad.unsqueeze(1) * m.square()).unsqueeze(2))
        return grad_v, grad_m


def weighted_fm_interaction(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """fm_interaction(m * v) for per-feature factors m [batch, h], in linear time (Eq. 7)."""
    return _WeightedInteraction.apply(v, m)


class Dropout(nn.Module):
    """Inverted dropout whose mask comes from 15-bit random integers drawn 4 to an int64.

    torch's CPU dropout draws one Bernoulli sample per element, which costs as much as a
    quarter of IFM's FEN step; this draws a quarter as many 64-bit words. The drop rate is
    rounded to a multiple of 1/32768 (0.3 becomes 0.299988...).
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout rate must be in [0, 1), got {p}")
        self.p = p
        self.threshold = round(p * 32768)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device).random_()
        bits = words.view(torch.int16)[:x.numel()].view(x.shape) & 0x7FFF       # uniform on 0..32767
        keep = (bits >= self.threshold).to(x.dtype).mul_(32768 / (32768 - self.threshold))
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PerFeatureLayout:
    """Which features occur in which field, so that batches can be computed per feature.

    A linear layer on the stacked embeddings V_x = [v_{x_1}; ...; v_{x_h}] is W V_x + b =
    sum_j W_j v_{x_j} + b, W_j being the columns of W that read field j. Projecting every
    feature once, T_f = W_{field(f)} v_f, and summing T over each instance's features is the
    same function; when the dataset has fewer features than a batch stacks rows (Frappe: 5,382
    against 2,048 x 10) it needs a quarter of the matrix products, forward and backward.
    Likewise the FM term needs no [batch, h, k] tensor (see `interaction`).
    It requires each feature id to belong to one field, as in the libfm data.
    """

    def __init__(self, ids: torch.Tensor, sizes: list[int], num_features: int):
        self.ids, self.sizes = ids, sizes
        self.compact_id = torch.full((num_features,), -1, dtype=torch.long, device=ids.device)
        self.compact_id[ids] = torch.arange(len(ids), device=ids.device)
        # field_of[f]: the one field feature f was fitted in (-1: never seen)
        self.field_of = torch.full((num_features,), -1, dtype=torch.long, device=ids.device)
        self.field_of[ids] = torch.repeat_interleave(torch.arange(len(sizes), device=ids.device),
                                                     torch.tensor(sizes, device=ids.device))

    def check(self, x: torch.Tensor) -> None:
        """Refuse ids outside the field they were fitted in: per feature, an id in another column
        would be projected with the wrong columns of W and give a silently wrong output."""
        wrong = self.field_of[x] != torch.arange(x.shape[1], device=x.device)
        if bool(wrong.any()):
            row, col = (int(i) for i in wrong.nonzero()[0])
            raise ValueError(f"feature id {int(x[row, col])} in column {col} of row {row} is not a field-{col} id of the "
                             "data this model's per-feature layout was fitted on (use_feature_fields)")

    @classmethod
    def fit(cls, x_all: torch.Tensor, num_features: int):
        """The layout of every instance the model will see, or None if ids are shared by fields."""
        columns = [torch.unique(x_all[:, j]) for j in range(x_all.shape[1])]
        ids = torch.cat(columns)
        if len(torch.unique(ids)) != len(ids):
            return None
        return cls(ids, [len(c) for c in columns], num_features)

    def applies(self, x: torch.Tensor) -> bool:
        """Per-feature wins when the batch stacks more rows than there are features."""
        return x.numel() > len(self.ids)

    def first_layer(self, table: torch.Tensor, linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """linear(V_x), computed per feature."""
        self.check(x)
        k = table.shape[1]
        # One gather of the used rows, split by field: its backward is a single concatenation.
        per_field = table.index_select(0, self.ids).split(self.sizes)
        projected = torch.cat([v @ linear.weight[:, j * k:(j + 1) * k].t() for j, v in enumerate(per_field)])
        return nn.functional.embedding_bag(self.compact_id[x], projected, mode="sum") + linear.bias

    @staticmethod
    def interaction_vector(table: torch.Tensor, x: torch.Tensor, m: torch.Tensor | None = None) -> torch.Tensor:
        """sum_{i<j} m_i v_i * m_j v_j, [batch, k], as 1/2 ((sum_j m_j v_j)^2 - sum_j m_j^2 v_j^2), both
        sums weighted embedding bags."""
        weighted_sum = nn.functional.embedding_bag(x, table, mode="sum", per_sample_weights=m)
        squares = nn.functional.embedding_bag(x, table.square(), mode="sum",
                                              per_sample_weights=None if m is None else m.square())
        return 0.5 * (weighted_sum.square() - squares)

    @staticmethod
    def interaction(table: torch.Tensor, x: torch.Tensor, m: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 7 (Eq. 2 when m is None) as 1/2 (||sum_j m_j v_j||^2 - sum_j m_j^2 ||v_j||^2): the sum
        is one (weighted) embedding bag and ||v_f||^2 is computed once per feature."""
        weighted_sum = nn.functional.embedding_bag(x, table, mode="sum", per_sample_weights=m)
        norms = table.square().sum(dim=1)[x]
        squares = norms if m is None else m.square() * norms
        return 0.5 * (weighted_sum.square().sum(dim=1) - squares.sum(dim=1))


class StackedInputs:
    """The general path: the active embeddings stacked, v [batch, h, k] (Eq. 4's V_x)."""

    def __init__(self, model, x: torch.Tensor):
        self.x, self.v = x, model.embedding(x)

    def mlp(self, layers: nn.Sequential) -> torch.Tensor:
        """layers(V_x): an MLP on the concatenated embeddings."""
        return layers(self.v.flatten(start_dim=1))

    def interaction(self, m: torch.Tensor | None = None) -> torch.Tensor:
        """sum_{i<j} m_i m_j <v_i, v_j>, [batch] (m = 1 when None)."""
        return fm_interaction(self.v) if m is None else weighted_fm_interaction(self.v, m)

    def interaction_vector(self, m: torch.Tensor | None = None) -> torch.Tensor:
        """sum_{i<j} m_i v_i * m_j v_j, [batch, k]."""
        return bi_interaction(self.v if m is None else m.unsqueeze(2) * self.v)


class PerFeatureInputs:
    """The per-feature path: the same three functions without a [batch, h, k] tensor."""

    def __init__(self, model, x: torch.Tensor):
        self.x, self.layout, self.table = x, model.layout, model.embedding.weight

    def mlp(self, layers: nn.Sequential) -> torch.Tensor:
        return layers[1:](self.layout.first_layer(self.table, layers[0], self.x))

    def interaction(self, m: torch.Tensor | None = None) -> torch.Tensor:
        return self.layout.interaction(self.table, self.x, m)

    def interaction_vector(self, m: torch.Tensor | None = None) -> torch.Tensor:
        return self.layout.interaction_vector(self.table, self.x, m)

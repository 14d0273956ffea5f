"""Building blocks shared by every model: feature weights, embeddings, the FM term, an MLP.

Every model takes `x`, an int64 tensor [batch, h] of global feature ids (one active
feature per field, all feature values 1), and returns a float tensor [batch]: the
regression target or, for binary tasks, the logit.
"""
import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "identity": nn.Identity}


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


class FeatureTable(nn.Module):
    """A table with one row per feature; sparse=True gives torch's sparse row gradients
    (right for big tables such as MovieLens' 90k features), False the dense index_add one."""

    def __init__(self, num_features: int, width: int, sparse: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_features, width))
        self.sparse = sparse

    def forward(self, x):
        if self.sparse:
            return nn.functional.embedding(x, self.weight, sparse=True)
        return _GatherRows.apply(self.weight, x)


class FeatureWeights(nn.Module):
    """w0 and one scalar weight w_i per feature: the linear part of Eq. 1."""

    def __init__(self, num_features: int, sparse: bool = False):
        super().__init__()
        # Zero initialisation as in the NFM/IFM TensorFlow code.
        self.weight = FeatureTable(num_features, 1, sparse)
        nn.init.zeros_(self.weight.weight)
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-feature weights w_i of the active features, [batch, h]."""
        return self.weight(x).squeeze(-1)


class FeatureEmbeddings(FeatureTable):
    """v_i for every feature; N(0, 0.01) as in the authors' code."""

    def __init__(self, num_features: int, embedding_size: int, sparse: bool = False):
        super().__init__(num_features, embedding_size, sparse)
        nn.init.normal_(self.weight, std=0.01)


def bi_interaction(v: torch.Tensor) -> torch.Tensor:
    """sum_{i<j} v_i * v_j (elementwise), [batch, k], in linear time (Eq. 2 before summing over f)."""
    return 0.5 * (v.sum(dim=1).square() - v.square().sum(dim=1))


def fm_interaction(v: torch.Tensor) -> torch.Tensor:
    """sum_{i<j} <v_i, v_j>, [batch]: the linear-time form of Eq. 2 (and Eq. 7 with v_x)."""
    return bi_interaction(v).sum(dim=1)


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


def fm_interaction_quadratic(v: torch.Tensor) -> torch.Tensor:
    """The same sum written as the double loop of Eq. 1; O(k h^2), kept for tests."""
    h = v.shape[1]
    total = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
    for i in range(h):
        for j in range(i + 1, h):
            total = total + (v[:, i] * v[:, j]).sum(dim=1)
    return total


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


def mlp(input_size: int, hidden_sizes, *, activation: str = "relu", dropout=0.0,
        batch_norm: bool = False, bn_eps: float = 1e-5) -> nn.Sequential:
    """Fully connected layers input -> hidden_sizes[0] -> ... (Eq. 4); no output layer.
    Each layer is Linear -> [BatchNorm] -> activation -> [Dropout]; ``dropout`` is one rate
    or one per layer."""
    rates = list(dropout) if isinstance(dropout, (list, tuple)) else [dropout] * len(hidden_sizes)
    if len(rates) != len(hidden_sizes):
        raise ValueError(f"{len(rates)} dropout rates for {len(hidden_sizes)} layers")
    layers, size = [], input_size
    for width, rate in zip(hidden_sizes, rates):
        layers.append(nn.Linear(size, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width, eps=bn_eps))
        layers.append(ACTIVATIONS[activation]())
        if rate > 0:
            layers.append(Dropout(rate))
        size = width
    return nn.Sequential(*layers)


def glorot_normal_(linear: nn.Linear, fan_in: int, fan_out: int) -> nn.Linear:
    """W and b ~ N(0, sqrt(2 / (fan_in + fan_out))): the init of the TensorFlow code of IFM, NFM
    and AFM, biases included (e.g. gulyfish/Input-aware-Factorization-Machine code/IFM.py:201-222).
    Its callers pass the fan-in that code uses, which is not always the layer's."""
    std = (2.0 / (fan_in + fan_out)) ** 0.5
    with torch.no_grad():
        linear.weight.normal_(0.0, std)
        if linear.bias is not None:
            linear.bias.normal_(0.0, std)
    return linear


def glorot_normal_mlp_(layers: nn.Sequential, first_fan_in: int) -> None:
    """glorot_normal_ on every Linear of an mlp(), the first one with ``first_fan_in``."""
    fan_in = first_fan_in
    for linear in (m for m in layers if isinstance(m, nn.Linear)):
        glorot_normal_(linear, fan_in, linear.out_features)
        fan_in = linear.out_features


def linear_weights(module: nn.Module) -> list[nn.Parameter]:
    """The weight matrices (not biases) of every nn.Linear inside `module`: what L2 regularises."""
    return [m.weight for m in module.modules() if isinstance(m, nn.Linear)]


def linear_biases(module: nn.Module) -> list[nn.Parameter]:
    """The biases of every nn.Linear inside `module` (the released code regularises them too)."""
    return [m.bias for m in module.modules() if isinstance(m, nn.Linear) and m.bias is not None]


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


class FMBase(nn.Module):
    """What every model here shares with FM: w0, w_i and v_i, which FM pre-training fills in.

    Subclasses define forward(). `regularized()` lists the parameters that carry the
    paper's L2 penalty; `feature_parameters()` is what freezing the embeddings freezes (Table 2).
    Models with an MLP on the stacked embeddings name its first layer in `stacked_input_layer()`
    and route it through `mlp_on_stacked` and the FM term through `interaction`, so that
    `use_feature_fields` can switch them to the per-feature computation.
    """

    def __init__(self, num_features: int, num_fields: int, embedding_size: int, sparse: bool = False):
        super().__init__()
        self.num_fields = num_fields
        self.linear = FeatureWeights(num_features, sparse)
        self.embedding = FeatureEmbeddings(num_features, embedding_size, sparse)
        self.layout: PerFeatureLayout | None = None
        # What a model does to the pooled interaction vector before summing it (the released
        # code's dropout and batch norm); None: nothing, and the scalar kernels compute the sum.
        self.pool: nn.Module | None = None

    def fm_parts(self, x: torch.Tensor):
        """(w0 + sum_i w_i, v) for a batch: the FM linear term and the active embeddings [batch, h, k]."""
        return self.linear.bias + self.linear(x).sum(dim=1), self.embedding(x)

    def stacked_input_layer(self) -> nn.Linear | None:
        return None

    def use_feature_fields(self, x_all: torch.Tensor) -> bool:
        """Turn on the per-feature computation where it applies (dense table, an MLP on the
        stacked embeddings, one field per feature id); returns whether it is on."""
        usable = not self.embedding.sparse and self.stacked_input_layer() is not None
        self.layout = PerFeatureLayout.fit(x_all, self.embedding.weight.shape[0]) if usable else None
        return self.layout is not None

    def stacked_embeddings(self, x: torch.Tensor) -> torch.Tensor | None:
        """v [batch, h, k], or None when this batch is computed per feature and needs none."""
        return None if self.layout is not None and self.layout.applies(x) else self.embedding(x)

    def mlp_on_stacked(self, mlp: nn.Sequential, x: torch.Tensor, v: torch.Tensor | None) -> torch.Tensor:
        if v is None:
            return mlp[1:](self.layout.first_layer(self.embedding.weight, mlp[0], x))
        return mlp(v.flatten(start_dim=1))

    def interaction(self, x: torch.Tensor, v: torch.Tensor | None, m: torch.Tensor | None = None) -> torch.Tensor:
        """sum_{i<j} m_i m_j <v_i, v_j> (m = 1 when None), per feature when v is None."""
        if v is None:
            return self.layout.interaction(self.embedding.weight, x, m)
        return fm_interaction(v) if m is None else weighted_fm_interaction(v, m)

    def interaction_vector(self, x: torch.Tensor, v: torch.Tensor | None, m: torch.Tensor | None = None):
        """sum_{i<j} m_i v_i * m_j v_j, [batch, k] (m = 1 when None), per feature when v is None."""
        if v is None:
            return self.layout.interaction_vector(self.embedding.weight, x, m)
        return bi_interaction(v if m is None else m.unsqueeze(2) * v)

    def pooled_interaction(self, x: torch.Tensor, v: torch.Tensor | None, m: torch.Tensor | None = None):
        """sum_k pool(sum_{i<j} m_i v_i * m_j v_j)_k: the FM term (Eq. 2 / Eq. 7), with `pool` (dropout,
        batch norm) on the pooled vector where a model has one."""
        if self.pool is None:
            return self.interaction(x, v, m)
        return self.pool(self.interaction_vector(x, v, m)).sum(dim=1)

    def regularized(self, biases: bool = False) -> list[nn.Parameter]:
        """The parameters that carry the L2 penalty (with ``biases``: also the biases of those layers)."""
        return []

    def l2_groups(self, l2: float, biases: bool = False) -> list[tuple[list[nn.Parameter], float]]:
        """(parameters, lambda) pairs: the paper's lambda on `regularized()` unless a model says otherwise."""
        return [(self.regularized(biases), l2)]

    def fm_state(self) -> dict:
        """The FM part of the parameters (w0, w, v), to copy into another model."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(("linear.", "embedding."))}

    def feature_parameters(self) -> list[nn.Parameter]:
        return list(self.linear.parameters()) + list(self.embedding.parameters())

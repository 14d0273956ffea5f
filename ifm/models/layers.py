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


def mlp(input_size: int, hidden_sizes, *, activation: str = "relu", dropout: float = 0.0,
        batch_norm: bool = False) -> nn.Sequential:
    """Fully connected layers input -> hidden_sizes[0] -> ... (Eq. 4); no output layer."""
    layers, size = [], input_size
    for width in hidden_sizes:
        layers.append(nn.Linear(size, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(ACTIVATIONS[activation]())
        if dropout > 0:
            layers.append(Dropout(dropout))
        size = width
    return nn.Sequential(*layers)


def linear_weights(module: nn.Module) -> list[nn.Parameter]:
    """The weight matrices (not biases) of every nn.Linear inside `module`: what L2 regularises."""
    return [m.weight for m in module.modules() if isinstance(m, nn.Linear)]


class FMBase(nn.Module):
    """What every model here shares with FM: w0, w_i and v_i, which FM pre-training fills in.

    Subclasses define forward(). `regularized()` lists the parameters that carry the
    paper's L2 penalty; `feature_parameters()` is what freezing the embeddings freezes (Table 2).
    """

    def __init__(self, num_features: int, num_fields: int, embedding_size: int, sparse: bool = False):
        super().__init__()
        self.num_fields = num_fields
        self.linear = FeatureWeights(num_features, sparse)
        self.embedding = FeatureEmbeddings(num_features, embedding_size, sparse)

    def fm_parts(self, x: torch.Tensor):
        """(w0 + sum_i w_i, v) for a batch: the FM linear term and the active embeddings [batch, h, k]."""
        return self.linear.bias + self.linear(x).sum(dim=1), self.embedding(x)

    def regularized(self) -> list[nn.Parameter]:
        return []

    def l2_groups(self, l2: float) -> list[tuple[list[nn.Parameter], float]]:
        """(parameters, lambda) pairs: the paper's lambda on `regularized()` unless a model says otherwise."""
        return [(self.regularized(), l2)]

    def fm_state(self) -> dict:
        """The FM part of the parameters (w0, w, v), to copy into another model."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(("linear.", "embedding."))}

    def feature_parameters(self) -> list[nn.Parameter]:
        return list(self.linear.parameters()) + list(self.embedding.parameters())

"""Building blocks shared by every model: feature weights, embeddings, the FM term, an MLP.

Every model takes `x`, an int64 tensor [batch, h] of global feature ids (one active
feature per field, all feature values 1), and returns a float tensor [batch]: the
regression target or, for binary tasks, the logit.
"""
import torch
from torch import nn

from ifm.models.kernels import Dropout, PerFeatureInputs, PerFeatureLayout, StackedInputs, gather_rows

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "identity": nn.Identity}


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
        return gather_rows(self.weight, x)


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


def fm_state_of(state: dict) -> dict:
    """The FM part (w0, w_i, v_i: FMBase's `linear.*` and `embedding.*` tensors) of a state_dict:
    what an FM pre-training hands on to IFM, AFM, DeepFM and Wide&Deep."""
    return {k: v for k, v in state.items()
            if isinstance(k, str) and k.startswith(("linear.", "embedding.")) and isinstance(v, torch.Tensor)}


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

    def linear_term(self, x: torch.Tensor) -> torch.Tensor:
        """w0 + sum_i w_i over the active features (Eq. 1's linear part), [batch]."""
        return self.linear.bias + self.linear(x).sum(dim=1)

    def stacked_input_layer(self) -> nn.Linear | None:
        return None

    def use_feature_fields(self, x_all: torch.Tensor | None) -> bool:
        """Turn on the per-feature computation where it applies (dense table, an MLP on the
        stacked embeddings, one field per feature id, fitted on x_all); None turns it off.
        Returns whether it is on."""
        usable = x_all is not None and not self.embedding.sparse and self.stacked_input_layer() is not None
        self.layout = PerFeatureLayout.fit(x_all, self.embedding.weight.shape[0]) if usable else None
        return self.layout is not None

    def inputs(self, x: torch.Tensor) -> StackedInputs | PerFeatureInputs:
        """The one place that chooses the computation path of a batch: per feature when the
        layout is fitted and the batch stacks more rows than there are features."""
        if self.layout is not None and self.layout.applies(x):
            return PerFeatureInputs(self, x)
        return StackedInputs(self, x)

    def pooled_interaction(self, inputs, m: torch.Tensor | None = None) -> torch.Tensor:
        """sum_k pool(sum_{i<j} m_i v_i * m_j v_j)_k: the FM term (Eq. 2 / Eq. 7), with `pool` (dropout,
        batch norm) on the pooled vector where a model has one."""
        if self.pool is None:
            return inputs.interaction(m)
        return self.pool(inputs.interaction_vector(m)).sum(dim=1)

    def regularized(self, biases: bool = False) -> list[nn.Parameter]:
        """The parameters that carry the L2 penalty (with ``biases``: also the biases of those layers)."""
        return []

    def l2_groups(self, l2: float, biases: bool = False) -> list[tuple[list[nn.Parameter], float]]:
        """(parameters, lambda) pairs: the paper's lambda on `regularized()` unless a model says otherwise."""
        return [(self.regularized(biases), l2)]

    def fm_state(self) -> dict:
        """The FM part of the parameters (w0, w, v), to copy into another model."""
        return fm_state_of(self.state_dict())

    def feature_parameters(self) -> list[nn.Parameter]:
        return list(self.linear.parameters()) + list(self.embedding.parameters())


class InputAwareFM(FMBase):
    """What IFM and DIFM share: the factors m_x of a subclass's factor estimating network
    (`_factors(inputs)`, [batch, h]) reweight w_i and v_i before the FM prediction layer."""

    def _factors(self, inputs) -> torch.Tensor:
        raise NotImplementedError

    def factors(self, x: torch.Tensor) -> torch.Tensor:
        """Input-aware factors m_x,i of the active features of each instance in x (Table 1), [batch, h]."""
        return self._factors(self.inputs(x))

    def forward_with_factors(self, x, m=None):
        """IFM's Eqs. 6 and 7: w0 + sum_i m_x,i w_i + sum_{i<j} <m_x,i v_i, m_x,j v_j>, with the
        network's factors m (or the given ones)."""
        inputs = self.inputs(x)
        if m is None:
            m = self._factors(inputs)
        return self.linear.bias + (m * self.linear(x)).sum(dim=1) + self.pooled_interaction(inputs, m)

    def forward(self, x):
        return self.forward_with_factors(x)

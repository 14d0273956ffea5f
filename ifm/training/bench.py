"""Training-speed benchmark: samples per second and peak memory for one epoch of a model
at the paper's settings, the fraction of the FEN's GEMM-bound rate IFM reaches, and
optionally DeepCTR-Torch's IFM timed by the same harness on the same batches.

Speed is measured here, never in unit tests.
"""
from __future__ import annotations

import os
import resource
import threading
import time

import torch

from ifm.training import protocol
from ifm.training.recipes import paper_config
from ifm.training.loop import build_for, loss_sum, make_optimizer, seed_everything, train_step


class PeakMemory:
    """Peak resident memory (CPU) or peak allocated memory (CUDA) above the level at entry."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self.base)
            time.sleep(0.002)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.base = self._rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self._stop.set()
            self._thread.join()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, batches, device, warmup: int = 3) -> tuple[float, list[float]]:
    """Run `step` on warm-up batches, then time it over all `batches`.

    Returns the total seconds and each step's seconds (their median resists the bursts of
    a shared machine better than the total does).
    """
    for batch in batches[:warmup]:
        step(*batch)
    _sync(device)
    times = []
    for batch in batches:
        start = time.perf_counter()
        step(*batch)
        _sync(device)
        times.append(time.perf_counter() - start)
    return sum(times), times


def median(values):
    return sorted(values)[len(values) // 2]


def epoch_batches(dataset, batch_size: int, device, seed: int = 0, max_batches: int | None = None):
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be at least 1, got {max_batches}")
    if len(dataset.train) < batch_size:
        raise ValueError(f"{dataset.name} has {len(dataset.train):,} training instances, fewer than one "
                         f"batch of {batch_size:,}: nothing to time")
    x, y = dataset.train.x.to(device), dataset.train.y.to(device)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).to(device)
    starts = range(0, len(x) - batch_size + 1, batch_size)   # full batches only: every step the same shape
    batches = [(x[order[s:s + batch_size]], y[order[s:s + batch_size]]) for s in starts]
    return batches[:max_batches]


def fen_gemm_bound(batch_size: int, layer_sizes: list[tuple[int, int]], device, repeats: int = 15) -> dict:
    """Time the FEN's matrix products alone (forward X W^T, backward dX = G W and dW = G^T X per
    layer) at the benchmark's shapes: the rate no implementation of the FEN can beat here.
    Reported from the median repeat."""
    def operands(n_in, n_out):
        return (torch.randn(batch_size, n_in, device=device), torch.randn(n_out, n_in, device=device),
                torch.randn(batch_size, n_out, device=device))
    layers = [operands(i, o) for i, o in layer_sizes]

    def gemms():
        for x, w, g in layers:
            x @ w.t(); g @ w; g.t() @ x
    _, times = time_steps(lambda *_: gemms(), [(None, [0] * batch_size)] * repeats, device)
    flops = sum(3 * 2 * batch_size * i * o for i, o in layer_sizes)
    return {"gemm_gflops": flops / median(times) / 1e9, "bound_samples_per_second": batch_size / median(times)}


def bench_ours(dataset, model_name: str, device, max_batches=None, per_feature: bool = True, recipe: str = "paper",
               **overrides) -> dict:
    """per_feature=False times IFM's general per-instance path (the one MovieLens and Avazu take);
    `recipe` bars times the open benchmark's setting and step (embedding 10, Adam, its L2 and clipping)."""
    config = paper_config(dataset.name, model_name, device=str(device), recipe=recipe, **overrides)
    if config.protocol:
        protocol.check_task(dataset.task, dataset.name)
    seed_everything(config.seed)
    model = build_for(config, dataset, device)
    if not per_feature:
        model.use_feature_fields(None)
    optimizer = make_optimizer(model, config)
    model.train()

    def step(x, y):
        if config.protocol:
            protocol.step(model, optimizer, x, y, config.protocol)
        else:
            train_step(model, optimizer, x, y, dataset.task)

    batches = epoch_batches(dataset, config.batch_size, device, max_batches=max_batches)
    result = _measure(step, batches, device, f"{model_name} (this package)", config)
    if model_name == "ifm":
        k, h, width = config.embedding_size, dataset.num_fields, config.model_options["fen_width"]
        sizes = [(h * k, width)] + [(width, width)] * (config.model_options["fen_layers"] - 1) + [(width, h)]
        bound = fen_gemm_bound(config.batch_size, sizes, device)
        # Median step against median GEMM set: both measured minutes apart on a shared machine.
        result.update(bound, fraction_of_gemm_bound=result["median_step_samples_per_second"]
                      / bound["bound_samples_per_second"])
    return result


def _measure(step, batches, device, implementation: str, config) -> dict:
    """The timed steps' rates and peak memory, and the share of this process's CPU time spent in
    the kernel meanwhile (page faults and memory mapping: a few percent in a plain process)."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    with PeakMemory(device) as memory:
        seconds, times = time_steps(step, batches, device)
    after = resource.getrusage(resource.RUSAGE_SELF)
    user, kernel = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    samples = sum(len(b[1]) for b in batches)
    return {"implementation": implementation, "samples_per_second": samples / seconds,
            "median_step_samples_per_second": config.batch_size / median(times),
            "peak_memory_mb": memory.peak / 2**20, "batch_size": config.batch_size,
            "embedding_size": config.embedding_size, "batches": len(batches),
            "kernel_share": kernel / (user + kernel) if user + kernel > 0 else float("nan")}


def bench_deepctr(dataset, device, max_batches=None) -> dict:
    """DeepCTR-Torch's IFM with the same sizes, trained step by step exactly as its fit() does
    (forward, summed loss + its regularisation loss, backward, Adagrad), on the same batches."""
    try:
        from deepctr_torch.inputs import SparseFeat
        from deepctr_torch.models import IFM as DeepCTRIFM
    except ImportError as error:
        raise SystemExit(f"--compare deepctr-torch needs the optional package deepctr-torch "
                         f"(pip install deepctr-torch scikit-learn requests): {error}")
    config = paper_config(dataset.name, "ifm")
    x_all = torch.cat([dataset.train.x, dataset.valid.x, dataset.test.x])
    offsets = x_all.min(dim=0).values                                # DeepCTR wants per-field ids from 0
    sizes = (x_all.max(dim=0).values - offsets + 1).tolist()
    columns = [SparseFeat(f"field{j}", int(n), embedding_dim=config.embedding_size) for j, n in enumerate(sizes)]
    options = config.model_options
    torch.manual_seed(config.seed)
    model = DeepCTRIFM(columns, columns, dnn_hidden_units=(options["fen_width"],) * options["fen_layers"],
                       dnn_dropout=options["dropout"], l2_reg_dnn=config.l2, l2_reg_embedding=0, l2_reg_linear=0,
                       task="binary" if dataset.task == "binary" else "regression", device=str(device))
    optimizer = torch.optim.Adagrad(model.parameters(), lr=config.learning_rate)
    model.train()

    def step(x, y):
        output = model((x - offsets.to(device)).float()).squeeze(-1)
        if dataset.task == "binary":   # DeepCTR's binary output is already a probability
            loss = torch.nn.functional.binary_cross_entropy(output, y, reduction="sum")
        else:
            loss = loss_sum(output, y, "regression")
        total = loss + model.get_regularization_loss() + model.aux_loss
        optimizer.zero_grad()
        total.backward()
        optimizer.step()

    batches = epoch_batches(dataset, config.batch_size, device, max_batches=max_batches)
    return _measure(step, batches, device, "deepctr-torch IFM", config)

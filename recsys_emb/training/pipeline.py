"""Train steps, one batch at a time (``plain``) or through TorchRec's ``TrainPipelineSparseDist``
(``sparse_dist``): while batch ``i`` runs forward, backward and the optimizer step, batch ``i + 1`` has been
copied to the device, remapped, and its ids sent to the ranks that hold their rows (the sharded
collection's input all-to-all), and batch ``i + 2`` is being read.

Both runners take the steps of one *segment*: the steps up to the next point where the trainer evaluates,
checkpoints or stops. A pipelined segment ends with an empty pipeline and the model's own forwards
restored, so evaluation, checkpoints and resume see exactly what the plain loop leaves, and the next
segment starts from the data position alone (the pipeline reads ahead only inside a segment).
"""

from __future__ import annotations

import logging
from itertools import islice
from typing import Any, Callable, Iterator, List, Optional, Tuple, cast

import torch
from torch import nn

from recsys_emb.torch_stack import require_torch_stack

require_torch_stack()  # before TorchRec: a missing or mismatched stack fails here, with the install commands

from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from recsys_emb.data.batches import Batch
from recsys_emb.layer import EmbeddingLayer
from recsys_emb.models.dlrm import DLRM

__all__ = ["StepFn", "PlainSteps", "SparseDistSteps", "sparse_dist_unsupported", "make_steps"]

logger = logging.getLogger(__name__)

StepFn = Callable[[Batch], Tuple[torch.Tensor, torch.Tensor]]
"""``step_loss(batch) -> (loss to backpropagate, the batch's data loss)``, the batch on the device."""


class PlainSteps:
    """One batch at a time: move it to the device, forward, backward, optimizer step."""

    def __init__(self, optimizer: torch.optim.Optimizer, step_loss: StepFn, device: torch.device) -> None:
        self.optimizer = optimizer
        self.step_loss = step_loss
        self.device = device

    def run(self, batches: Iterator[Batch], steps: int, before_step: Callable[[], None]
            ) -> Iterator[Tuple[torch.Tensor, int]]:
        """Train on the next ``steps`` batches of ``batches``; yields (data loss, batch size) after each
        step. ``before_step`` runs before each step (the learning-rate schedule)."""
        for batch in islice(batches, steps):
            before_step()
            if self.device.type != "cpu":
                batch = batch.to(self.device, non_blocking=True)
            total, loss = self.step_loss(batch)
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()  # the fused optimizer updates the tables inside this call
            self.optimizer.step()
            yield loss.detach(), batch.batch_size


class _SparseView(nn.Module):
    """What TorchRec's pipeline traces (with ``torch.fx``) to find the sharded collection and how its
    input comes from a batch: DLRM's one embedding layer, remapped by its parameter-free
    :class:`~recsys_emb.layer.RemapStage` from ``batch.sparse``. The model's own forward (input checks,
    Python control flow) is not traceable; this view names the same modules at the same paths
    (``model.embeddings.remap_stage``, ``model.embeddings.ebc``), so the pipeline rewrites exactly
    the modules the model's forward then calls. Never run, only traced."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model: Any = model  # a DLRM (checked by sparse_dist_unsupported)

    def forward(self, batch: Batch) -> Any:
        remapped = self.model.embeddings.remap_stage(batch.sparse)
        return self.model.embeddings.ebc(remapped[0])


def sparse_dist_unsupported(model: nn.Module, backend: str) -> Optional[str]:
    """Why TorchRec's sparse-dist pipeline cannot run ``model`` (None when it can): it needs
    DistributedModelParallel (the ``torchrec`` backend) and a collection whose input is the batch's KJT
    remapped by a parameter-free module (DLRM: one EmbeddingLayer fed ``batch.sparse``)."""
    if backend != "torchrec" or not isinstance(model, DistributedModelParallel):
        return f"train.embedding_backend={backend!r} is not DistributedModelParallel"
    inner = model.module
    if not isinstance(inner, DLRM) or not isinstance(inner.embeddings, EmbeddingLayer):
        return (f"{type(inner).__name__} splits the batch's ids between its embedding layers before the lookup, "
                f"so no collection reads a batch attribute directly")
    return None


class _NoStreamsOnCpu(logging.Filter):
    """Drops TorchRec's warning that a pipelined remap has no CUDA side stream, on CPU, where no stream
    exists and the pipeline runs its stages in order on one (the warning is about CUDA races)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "stream. This may cause race conditions" not in record.getMessage()


_CPU_FILTER = _NoStreamsOnCpu()


class SparseDistSteps:
    """Steps through TorchRec's ``TrainPipelineSparseDist``: the same updates as :class:`PlainSteps`, in the
    same order, with the copy, remap and id all-to-all of the next batch done ahead of its step.

    Example (four steps of a tiny DLRM on random batches; the trainer feeds its Parquet batches the same way):
        >>> from torchrec.optim.optimizers import in_backward_optimizer_filter
        >>> from recsys_emb.layer import kjt_from_lists
        >>> from recsys_emb.sharding import init_single_process_group, shard_model
        >>> from recsys_emb.specs import FeatureSpec, Full
        >>> init_single_process_group()
        >>> layer = EmbeddingLayer([FeatureSpec("a", Full(4), cardinality=10)], device=torch.device("meta"))
        >>> dmp = shard_model(DLRM(layer, dense_in=2, bottom_mlp=[4], top_mlp=[4]), init_seed=0)
        >>> opt = torch.optim.SGD([p for _, p in in_backward_optimizer_filter(dmp.named_parameters())], lr=0.1)
        >>> def step_loss(b):
        ...     loss = nn.functional.binary_cross_entropy_with_logits(dmp(b.dense, b.sparse), b.labels)
        ...     return loss, loss
        >>> batches = iter([Batch(torch.randn(2, 2), kjt_from_lists({"a": [[i % 10], [3]]}), torch.ones(2))
        ...                 for i in range(4)])
        >>> steps = SparseDistSteps(dmp, opt, step_loss, torch.device("cpu"))
        >>> [size for _, size in steps.run(batches, 4, lambda: None)], steps.pipelined_modules
        ([2, 2, 2, 2], ['model.embeddings.ebc'])

    Args:
        model: the DistributedModelParallel model (see :func:`sparse_dist_unsupported`).
        optimizer: the dense optimizer (the tables' fused optimizer runs inside backward).
        step_loss: ``batch -> (loss to backpropagate, data loss)``, calling ``model``.
        device: the compute device (CPU: no side streams; the order of work is the pipeline's).
    """

    def __init__(self, model: DistributedModelParallel, optimizer: torch.optim.Optimizer, step_loss: StepFn,
                 device: torch.device) -> None:
        self.model = model
        self.step_loss = step_loss
        self.view = _SparseView(model.module)
        self.pipelined_modules: List[str] = []
        """The sharded modules whose input the pipeline distributes ahead (set by the first step)."""
        if device.type == "cpu":
            logging.getLogger("torchrec.distributed.train_pipeline.postproc").addFilter(_CPU_FILTER)
        self.pipeline: TrainPipelineSparseDist = TrainPipelineSparseDist(
            self.view, optimizer, device, execute_all_batches=True, pipeline_postproc=True,
            custom_model_fwd=self._forward)

    def _forward(self, batch: Optional[Batch]) -> Tuple[torch.Tensor, Tuple[torch.Tensor, int]]:
        assert batch is not None
        total, loss = self.step_loss(batch)
        return total, (loss.detach(), batch.batch_size)

    def run(self, batches: Iterator[Batch], steps: int, before_step: Callable[[], None]
            ) -> Iterator[Tuple[torch.Tensor, int]]:
        """Like :meth:`PlainSteps.run`. The pipeline reads at most ``steps`` batches of ``batches`` and
        is empty, with the model's forwards restored, when the last step is yielded."""
        segment = islice(batches, steps)
        self.view.train(self.model.training)
        try:
            for k in range(steps):
                before_step()
                try:
                    loss, size = self.pipeline.progress(segment)
                except StopIteration:
                    return  # the data ended early: the caller sees fewer steps
                if k == 0:
                    self._check_pipelined()
                if k == steps - 1:
                    self._release()
                yield loss, size
        finally:
            self._release()

    def _check_pipelined(self) -> None:
        """TorchRec only warns when its trace finds no collection to pipeline (then every step waits for its
        own all-to-all): a model change that hides the collection's input from the trace is an error here."""
        pipelined = [getattr(m.forward, "name", "?") for m in getattr(self.pipeline, "_pipelined_modules", [])]
        if not pipelined:
            raise RuntimeError("TorchRec's sparse-dist pipeline found no sharded collection fed from the batch "
                               "(model.embeddings.ebc after model.embeddings.remap_stage); set train.pipeline: none")
        self.pipelined_modules = pipelined

    def _release(self) -> None:
        """The model's own forwards back; batches still in flight (a segment left early) dropped."""
        self.pipeline.detach()
        self.pipeline.reset()


def make_steps(model: nn.Module, optimizer: torch.optim.Optimizer, step_loss: StepFn, device: torch.device,
               pipeline: str, backend: str) -> Tuple[Any, str]:
    """The step runner ``train.pipeline`` asks for where it applies, and its name (``sparse_dist`` or
    ``none``): ``sparse_dist`` falls back to the plain loop, with a log line saying why, for a model or
    backend TorchRec's pipeline cannot run."""
    if pipeline == "sparse_dist":
        why = sparse_dist_unsupported(model, backend)
        if why is None:
            return SparseDistSteps(cast(DistributedModelParallel, model), optimizer, step_loss, device), "sparse_dist"
        logger.info("train.pipeline=sparse_dist does not apply (%s): training with the plain loop", why)
    return PlainSteps(optimizer, step_loss, device), "none"

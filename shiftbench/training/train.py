"""The fine-tuning loop: one protocol, every learning rate of its grid, selection on source
validation only. Read it top to bottom.

For each learning rate the pretrained checkpoint is loaded afresh under the same seed (so the
new head starts identical and the data order is the same), trained for the protocol's epochs,
and scored on the source validation split after every epoch. The (learning rate, epoch) with
the best validation score wins; its weights are kept in memory and returned. No target data
is seen here.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from shiftbench.core import faults
from shiftbench.data.encode import EncodedSplit
from shiftbench.modeling.device import Runtime
from shiftbench.registry.protocol import Protocol
from shiftbench.registry.selection import next_learning_rate, since_best
from shiftbench.training.batching import collate, length_grouped_batches
from shiftbench.training.checkpoint import TrainState, load_checkpoint, save_checkpoint
from shiftbench.training.evaluation import predict
from shiftbench.training.hooks import NO_HOOKS, TrainHooks, count_trainable


@dataclass(frozen=True)
class EpochRecord:
    learning_rate: float
    epoch: int  # 1-based
    steps: int  # optimizer steps taken in this epoch
    train_loss: float  # mean training loss over the epoch's steps (nats: cross-entropy, or a remedy's loss)
    val_scores: dict[str, float]  # source validation only
    seconds: float  # wall time of the epoch's training steps (validation excluded)
    train_tokens: int  # real (non-padding) tokens processed in the epoch


@dataclass(frozen=True)
class FineTuned:
    state: dict[str, torch.Tensor]  # weights of the selected (lr, epoch), on the CPU
    selected_lr: float
    selected_epoch: int
    selection_score: float  # source-validation score of the selected (lr, epoch)
    history: tuple[EpochRecord, ...]
    train_seconds: float
    trainable_params: int | None = None  # parameters the optimizer updated (None: cached before it was recorded)
    model: Any = field(default=None, compare=False, repr=False)  # the trained module holding `state`, if in memory
    # Source-validation predictions of the selected (lr, epoch), made when it was scored for selection: the runner
    # stores them and fits the label-free estimates on them without scoring validation again. None when they
    # are not in memory (a cached or resumed fine-tune whose best epoch came before the resume; lora, whose
    # merged weights score slightly differently): the runner then scores validation itself.
    val_predictions: Any = field(default=None, compare=False, repr=False)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Standard BERT practice: no weight decay on biases and normalisation weights.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _schedule(protocol: Protocol, total_steps: int) -> Callable[[int], float]:
    warmup = math.ceil(protocol.warmup_ratio * total_steps)

    def factor(step: int) -> float:  # multiplies the peak learning rate
        if step < warmup:
            return (step + 1) / warmup
        if protocol.schedule == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def _lr_stopped(history: list[EpochRecord], lr: float, protocol: Protocol) -> bool:
    """Early stopping: has ``lr`` gone ``protocol.patience`` epochs without beating its best?
    Computed from the history alone, so a resumed fine-tune stops where an uninterrupted one does."""
    scores = [h.val_scores[protocol.selection_metric] for h in history if h.learning_rate == lr]
    return protocol.patience is not None and bool(scores) and since_best(scores) >= protocol.patience


def _next_lr(history: list[EpochRecord], protocol: Protocol) -> float | None:
    """The grid's next learning rate (None: the search is over), from the history alone."""
    trained = [(h.learning_rate, h.val_scores[protocol.selection_metric]) for h in history]
    return next_learning_rate(trained, protocol.learning_rates, protocol.grid_patience, protocol.lr_start)


def _build(make_model: Callable[[], torch.nn.Module], hooks: TrainHooks) -> torch.nn.Module:
    # The remedy may wrap the fresh classifier (lora: frozen checkpoint + trainable low-rank
    # adapters and head); after seeding, so a wrapper's new weights are drawn reproducibly.
    return hooks.wrap_model(make_model())


def fine_tune(
    make_model: Callable[[], torch.nn.Module],
    train: EncodedSplit,
    val: EncodedSplit,
    protocol: Protocol,
    seed: int,
    pad_id: int,
    runtime: Runtime,
    desc: str = "",
    log: Callable[[str], None] = lambda message: None,
    checkpoints: Path | None = None,
    hooks: TrainHooks = NO_HOOKS,
) -> FineTuned:
    """Train every learning rate of the grid and return the best (lr, epoch) by source validation.

    With ``checkpoints`` set, the full training state is saved after every epoch and a later
    call resumes from the newest one, giving the same result as an uninterrupted run.
    ``hooks``: what the protocol's remedy changes in the loop (:class:`TrainHooks`: the model it
    trains, the loss, a step after the backward pass, the weights it keeps); the default changes
    nothing. The remedy's hooks are made by the caller (``shiftbench.remedies``): this loop never
    looks at the remedy's name.
    What is scored on validation (e.g. entity-level for token classification) is ``val``'s task kind's.
    """
    steps_per_epoch = math.ceil(len(train) / protocol.batch_size)
    total_steps = protocol.epochs * steps_per_epoch
    if protocol.max_steps is not None:
        total_steps = min(total_steps, protocol.max_steps)
    lengths = train.lengths
    resume = load_checkpoint(checkpoints) if checkpoints is not None else None
    history = [EpochRecord(**h) for h in resume.history] if resume else []
    best_meta = resume.best if resume else None  # (score, lr, epoch)
    best_state = resume.best_state if resume else None
    best_val = None  # predictions of the selected (lr, epoch) on source validation, if made in this process
    elapsed = resume.elapsed if resume else 0.0
    trainable_params = None
    if resume:
        log(f"{desc} resuming after lr #{resume.lr_index + 1} epoch {resume.epoch} from {checkpoints}")
    t_start = time.perf_counter()

    # The grid is searched in the order the protocol says (selection.next_learning_rate): every
    # rate in turn, or a search that stops once the best is bracketed. A resumed fine-tune goes on
    # with the rate it was training.
    lr = protocol.learning_rates[resume.lr_index] if resume else _next_lr(history, protocol)
    while lr is not None:
        lr_index = protocol.learning_rates.index(lr)
        seed_everything(seed)
        model = _build(make_model, hooks).to(runtime.device)
        if trainable_params is None:
            trainable_params = count_trainable(model)
            total = sum(p.numel() for p in model.parameters())
            log(f"{desc} {trainable_params:,} trainable parameters ({trainable_params / total:.2%} of {total:,})")
        optimizer = torch.optim.AdamW(
            # Fused AdamW (CUDA and CPU alike, as transformers' Trainer defaults to): one kernel over
            # all parameters; on 2 CPU cores the per-tensor foreach path cost ~3x the update time.
            _param_groups(model, protocol.weight_decay),
            lr=lr,
            fused=True,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(protocol, total_steps))
        data_rng = np.random.default_rng(seed)  # same example order for every learning rate
        step, first_epoch = 0, 1
        if resume is not None and resume.lr_index == lr_index:
            model.load_state_dict(resume.model_state)
            optimizer.load_state_dict(resume.optimizer_state)
            scheduler.load_state_dict(resume.scheduler_state)
            torch.set_rng_state(resume.torch_rng)
            if resume.cuda_rng is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(resume.cuda_rng)
            data_rng.bit_generator.state = resume.data_rng
            step, first_epoch = resume.step, resume.epoch + 1
            resume = None
        for epoch in range(first_epoch, protocol.epochs + 1):
            if step >= total_steps:
                break
            if _lr_stopped(history, lr, protocol):
                log(
                    f"{desc} lr={lr:g}: early stop after epoch {epoch - 1} ({protocol.patience} without a better source-val score)"
                )
                break
            model.train()
            batches = length_grouped_batches(lengths, protocol.batch_size, data_rng)[: total_steps - step]
            loss_sum = torch.zeros((), device=runtime.device)  # summed on device: no host sync per step
            tokens = 0
            t0 = time.perf_counter()
            bar = tqdm(batches, desc=f"{desc} lr={lr:g} epoch {epoch}/{protocol.epochs}", leave=False, disable=None)
            for idx in bar:
                batch = collate(train.input_ids, idx, pad_id, runtime.device, train.segment_starts)
                labels = torch.from_numpy(train.batch_labels(idx)).to(runtime.device)
                with runtime.autocast():
                    logits = model(**batch).logits
                loss = hooks.loss(logits, labels, idx)  # cross-entropy; distill: mixed with the teacher's distribution
                loss.backward()
                hooks.after_backward(model, batch, labels, runtime)  # adversarial: FGM's second backward pass
                torch.nn.utils.clip_grad_norm_(model.parameters(), protocol.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                loss_sum += loss.detach()
                tokens += int(lengths[idx].sum())
                step += 1
                faults.fault_point("train_step")
            seconds = time.perf_counter() - t0
            val_pred = predict(model, val, protocol.eval_batch_size, pad_id, runtime)
            scores = val_pred.scores()
            history.append(
                EpochRecord(lr, epoch, len(batches), float(loss_sum) / max(1, len(batches)), scores, seconds, tokens)
            )
            score = scores[protocol.selection_metric]
            log(
                f"{desc} lr={lr:g} epoch {epoch}/{protocol.epochs}: train loss {history[-1].train_loss:.4f}, "
                f"source-val {protocol.selection_metric} {score:.4f} ({seconds:.0f} s, {tokens / seconds:.0f} tokens/s)"
            )
            if best_meta is None or score > best_meta[0]:  # ties keep the earlier (lr, epoch)
                best_meta = (score, lr, epoch)
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                best_val = val_pred
            last = (epoch == protocol.epochs or step >= total_steps) and _next_lr(history, protocol) is None
            if checkpoints is not None and not last:  # after the last epoch the result itself is cached
                save_checkpoint(
                    checkpoints,
                    TrainState(
                        lr_index=lr_index,
                        epoch=epoch,
                        step=step,
                        history=[asdict(h) for h in history],
                        best=best_meta,
                        elapsed=elapsed + time.perf_counter() - t_start,
                        model_state=model.state_dict(),
                        best_state=best_state,
                        optimizer_state=optimizer.state_dict(),
                        scheduler_state=scheduler.state_dict(),
                        torch_rng=torch.get_rng_state(),
                        cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                        data_rng=data_rng.bit_generator.state,
                    ),
                )
            faults.fault_point("epoch_end")
        del optimizer
        lr = _next_lr(history, protocol)
        if lr is None:
            trained = len({h.learning_rate for h in history})
            if trained < len(protocol.learning_rates):
                log(
                    f"{desc} grid search over after {trained} of {len(protocol.learning_rates)} learning rates: "
                    "the best is bracketed or at the grid's edge"
                )
            break  # keep `model`: it is returned with the selected weights
        del model  # free it before the next learning rate's model is built

    assert best_meta is not None and best_state is not None  # >= 1 learning rate and epoch
    score, lr, epoch = best_meta
    exported = hooks.export_state(best_state, lambda: _build(make_model, hooks))
    if exported is not None:  # lora: kept (and cached) as a plain classifier, so scoring needs no peft
        best_state = exported
        model = None  # the wrapped module is not what scoring loads
    else:
        # The last learning rate's module, with the selected weights: scoring uses it directly
        # instead of building the model a second time from the checkpoint files.
        model.load_state_dict(best_state)
    seconds = elapsed + time.perf_counter() - t_start
    return FineTuned(
        best_state,
        lr,
        epoch,
        score,
        tuple(history),
        seconds,
        trainable_params,
        model=model,
        val_predictions=best_val if model is not None else None,
    )

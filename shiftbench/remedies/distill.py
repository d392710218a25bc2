"""The ``distill`` remedy: knowledge distillation (Hinton et al. 2015) from a fine-tuned teacher.

The teacher is the model ``distill_teacher`` fine-tuned on the same source split and seed under
``distill_teacher_protocol`` (``standard`` by default): the very fine-tune a plain run of that
model would make, with the same fine-tune id. It is the remedy's dependency
(:meth:`Distill.dependencies`): the plan makes it a job of its own and the runner executes it
before the student, so a teacher already in the fine-tune cache is reused and a missing one is
trained once (under a claim on its id) and cached for later runs. The student's fine-tune id
includes the teacher's, so another teacher is another run.

The teacher scores the source train split once (its logits, before any student step); each
student batch then minimises

    alpha * CE(student, gold) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))

T^2 keeps the soft term's gradients on the scale of the hard one as T grows. Teacher and student
must share the tokenizer (the student's token ids are fed to the teacher; checked at plan time)
and the label space. Text classification only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from shiftbench.core.errors import ShiftbenchError
from shiftbench.core.guards import preview
from shiftbench.data.encode import EncodedSplit, tokenizer_identity
from shiftbench.modeling.models import LoadOptions, ResolvedModel, load_classifier, load_tokenizer, resolve_model
from shiftbench.registry.protocol import Protocol, load_protocol
from shiftbench.remedies.base import REMEDIES, Dependency, Remedy, TrainContext, Trained, register_remedy
from shiftbench.tasks import TextClassification
from shiftbench.training.hooks import TrainHooks

if TYPE_CHECKING:  # annotations only: torch is imported when the teacher scores, not with this module
    import torch

TEACHER = "teacher"  # the dependency's role


def teacher_remedies() -> list[str]:
    """Remedies a teacher may be fine-tuned under: those that end in a fine-tuned classifier and
    need no fine-tune of their own first."""
    return [name for name, cls in REMEDIES.items() if cls.fine_tunes and cls.dependencies is Remedy.dependencies]


def resolve_teacher(protocol: Protocol, catalog: Any, options: LoadOptions) -> Dependency:
    """The teacher model and protocol of a distill protocol, validated before any training."""
    teacher_protocol = load_protocol(protocol.distill_teacher_protocol)
    allowed = teacher_remedies()
    if teacher_protocol.remedy not in allowed:
        raise ShiftbenchError(
            f"field 'distill_teacher_protocol': the teacher protocol {preview(teacher_protocol.name)} uses the "
            f"{preview(teacher_protocol.remedy)} remedy; a teacher is fine-tuned with one of {', '.join(allowed)}"
        )
    return Dependency(TEACHER, resolve_model(str(protocol.distill_teacher), catalog, options), teacher_protocol)


def distillation_loss(
    student_logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """Hinton et al. (2015), mean over the batch, in nats; logits (B, C), labels (B,).

    >>> import torch
    >>> s, t = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    >>> round(float(distillation_loss(s, torch.tensor([0]), t, 1.0, 1.0)), 4)  # alpha 1: plain CE
    0.1269
    >>> round(float(distillation_loss(s, torch.tensor([0]), s, 2.0, 0.0)), 4)  # student = teacher: no KL
    0.0
    """
    import torch.nn.functional as F

    hard = F.cross_entropy(student_logits, labels)
    # KL(p_teacher || p_student) at temperature T; kl_div takes the student's log-probabilities.
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * hard + (1 - alpha) * temperature**2 * soft


def logits_of(model: Any, data: EncodedSplit, batch_size: int, pad_id: int, runtime: Any) -> np.ndarray:
    """(N, C) float32 logits in dataset order, batched longest-first like evaluation."""
    import torch

    from shiftbench.training.batching import collate, sorted_batches

    model.eval()
    out = np.zeros((len(data), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for idx in sorted_batches(data.lengths, batch_size):
            batch = collate(data.input_ids, idx, pad_id, runtime.device, data.segment_starts)
            with runtime.autocast():
                out[idx] = model(**batch).logits.float().cpu().numpy()
    return out


def check_tokenizers(teacher: Dependency, student: ResolvedModel, options: LoadOptions) -> None:
    """Teacher and student must tokenize alike. Both are loaded afresh: a tokenizer's serialisation
    (and so its identity) changes once it has been called with truncation settings."""
    if tokenizer_identity(load_tokenizer(teacher.model, options)) != tokenizer_identity(
        load_tokenizer(student, options)
    ):
        raise ShiftbenchError(
            f"distill: teacher {preview(teacher.model.name)} and student {preview(student.name)} use different tokenizers; "
            "the teacher reads the student's token ids, so pick a teacher with the same tokenizer"
        )


def check_head(
    teacher: str, finetune_id: str, state: dict[str, torch.Tensor], model: torch.nn.Module, label_space: tuple[str, ...]
) -> None:
    """The teacher's fine-tuned weights must fit a classifier over the student's labels."""
    expected = model.state_dict()
    bad = sorted(k for k in expected if k not in state or state[k].shape != expected[k].shape)
    if bad:
        raise ShiftbenchError(
            f"distill: teacher {preview(teacher)} (fine-tune {finetune_id}) does not fit a classifier over "
            f"the student's {len(label_space)} labels {list(label_space)} (mismatch in {bad[0]})"
        )


def soft_targets(teacher: Trained, ctx: TrainContext, batch_size: int) -> np.ndarray:
    """The fine-tuned teacher's (N, C) logits on the student's encoded source train split."""
    job = teacher.job
    tokenizer = load_tokenizer(job.model, ctx.load)
    model = load_classifier(job.model, ctx.label_space, tokenizer.pad_token_id, ctx.load)
    check_head(job.model.name, job.finetune_id, teacher.fine_tuned.state, model, ctx.label_space)
    model.load_state_dict(teacher.fine_tuned.state)
    model.to(ctx.runtime.device)
    logits = logits_of(model, ctx.train, batch_size, tokenizer.pad_token_id, ctx.runtime)
    del model
    return logits


class DistillHooks(TrainHooks):
    """The loss: gold labels mixed with the teacher's tempered distribution."""

    def __init__(self, soft_targets: np.ndarray, temperature: float, alpha: float):
        self.soft_targets, self.temperature, self.alpha = soft_targets, temperature, alpha

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        import torch

        teacher = torch.from_numpy(self.soft_targets[idx]).to(logits.device)
        return distillation_loss(logits.float(), labels, teacher, self.temperature, self.alpha)


@register_remedy("distill")
class Distill(Remedy):
    tasks = (TextClassification.name,)  # one text per example (a prompt, an augmented sentence, soft targets per text)

    def dependencies(self, catalog: Any, load: LoadOptions) -> tuple[Dependency, ...]:
        return (resolve_teacher(self.protocol, catalog, load),)

    def check(
        self, settings: Any, pairs: Sequence[Any], models: Sequence[ResolvedModel], dependencies: Sequence[Dependency]
    ) -> None:
        super().check(settings, pairs, models, dependencies)
        for teacher in dependencies:
            for student in models:
                check_tokenizers(teacher, student, settings.load)

    def train_hooks(self, ctx: TrainContext) -> TrainHooks:
        logits = soft_targets(ctx.done[TEACHER], ctx, self.protocol.eval_batch_size)
        return DistillHooks(logits, self.protocol.distill_temperature, self.protocol.distill_alpha)

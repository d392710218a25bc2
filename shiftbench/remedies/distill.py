"""The ``distill`` remedy: knowledge distillation (Hinton et al. 2015) from a fine-tuned teacher.

The teacher is the model ``distill_teacher`` fine-tuned on the same source split and seed under
``distill_teacher_protocol`` (``standard`` by default): the very fine-tune a plain run of that
model would make, with the same fine-tune id, so a teacher already in the fine-tune cache is
reused and a missing one is trained once (under a claim on its id) and cached for later runs.
The student's fine-tune id includes the teacher's, so another teacher is another run.

The teacher scores the source train split once (its logits, before any student step); each
student batch then minimises

    alpha * CE(student, gold) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))

T^2 keeps the soft term's gradients on the scale of the hard one as T grows. Teacher and student
must share the tokenizer (the student's token ids are fed to the teacher) and the label space.
Text classification only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from shiftbench.training.batching import collate, sorted_batches
from shiftbench.modeling.device import Runtime
from shiftbench.data.encode import EncodedSplit, Encoder, tokenizer_identity
from shiftbench.core.errors import ShiftbenchError
from shiftbench.core.guards import preview
from shiftbench.core.locks import claim
from shiftbench.modeling.models import LoadOptions, ResolvedModel, load_classifier, load_tokenizer, resolve_model
from shiftbench.registry.protocol import Protocol, load_protocol
from shiftbench.tasks import TextClassification, get_task

if TYPE_CHECKING:  # imported for annotations only: plan and runner import this module
    from shiftbench.registry.catalog import Catalog
    from shiftbench.execution.plan import FineTuneJob, Plan
    from shiftbench.training.train import FineTuned

# Remedies a teacher may be fine-tuned under: those that end in a fine-tuned classifier.
TEACHER_REMEDIES = ("none", "augment", "adversarial", "lora")


@dataclass(frozen=True)
class Teacher:
    model: ResolvedModel
    protocol: Protocol
    finetune_id: str = ""  # of the teacher's fine-tune on the job's source and seed; set by the plan


def resolve_teacher(protocol: Protocol, catalog: Catalog, options: LoadOptions, tasks: Iterable[str]) -> Teacher:
    """The teacher model and protocol of a distill protocol, validated before any training."""
    other = sorted(t for t in set(tasks) if not isinstance(get_task(t), TextClassification))
    if other:
        raise ShiftbenchError(f"the distill remedy supports text classification only, not {preview(other[0])}")
    teacher_protocol = load_protocol(protocol.distill_teacher_protocol)
    if teacher_protocol.remedy not in TEACHER_REMEDIES:
        raise ShiftbenchError(
            f"field 'distill_teacher_protocol': the teacher protocol {preview(teacher_protocol.name)} uses the "
            f"{preview(teacher_protocol.remedy)} remedy; a teacher is fine-tuned with one of {', '.join(TEACHER_REMEDIES)}"
        )
    return Teacher(resolve_model(str(protocol.distill_teacher), catalog, options), teacher_protocol)


def distillation_loss(
    student_logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """Hinton et al. (2015), mean over the batch, in nats; logits (B, C), labels (B,).

    >>> s, t = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    >>> round(float(distillation_loss(s, torch.tensor([0]), t, 1.0, 1.0)), 4)  # alpha 1: plain CE
    0.1269
    >>> round(float(distillation_loss(s, torch.tensor([0]), s, 2.0, 0.0)), 4)  # student = teacher: no KL
    0.0
    """
    hard = F.cross_entropy(student_logits, labels)
    # KL(p_teacher || p_student) at temperature T; kl_div takes the student's log-probabilities.
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * hard + (1 - alpha) * temperature**2 * soft


@torch.inference_mode()
def logits_of(model: Any, data: EncodedSplit, batch_size: int, pad_id: int, runtime: Runtime) -> np.ndarray:
    """(N, C) float32 logits in dataset order, batched longest-first like evaluation."""
    model.eval()
    out = np.zeros((len(data), model.config.num_labels), dtype=np.float32)
    for idx in sorted_batches(data.lengths, batch_size):
        batch = collate(data.input_ids, idx, pad_id, runtime.device)
        with runtime.autocast():
            out[idx] = model(**batch).logits.float().cpu().numpy()
    return out


def check_tokenizers(teacher: Teacher, student: ResolvedModel, options: LoadOptions) -> None:
    """Teacher and student must tokenize alike. Both are loaded afresh: a tokenizer's serialisation
    (and so its identity) changes once it has been called with truncation settings."""
    if tokenizer_identity(load_tokenizer(teacher.model, options)) != tokenizer_identity(load_tokenizer(student, options)):
        raise ShiftbenchError(
            f"distill: teacher {preview(teacher.model.name)} and student {preview(student.name)} use different tokenizers; "
            "the teacher reads the student's token ids, so pick a teacher with the same tokenizer"
        )


def check_head(teacher: Teacher, state: dict[str, torch.Tensor], model: torch.nn.Module, label_space: tuple[str, ...]) -> None:
    """The teacher's fine-tuned weights must fit a classifier over the student's labels."""
    expected = model.state_dict()
    bad = sorted(k for k in expected if k not in state or state[k].shape != expected[k].shape)
    if bad:
        raise ShiftbenchError(
            f"distill: teacher {preview(teacher.model.name)} (fine-tune {teacher.finetune_id}) does not fit a classifier over "
            f"the student's {len(label_space)} labels {list(label_space)} (mismatch in {bad[0]})"
        )


def soft_targets(
    job: FineTuneJob,
    plan: Plan,
    train: EncodedSplit,
    runtime: Runtime,
    fine_tuned: Callable[[FineTuneJob, Plan, Any, Encoder, Runtime], FineTuned],
) -> np.ndarray:
    """The teacher's (N, C) logits on the student's encoded source train split.

    ``fine_tuned`` is the runner's fine-tune-or-reuse step: the teacher goes through exactly the
    code path of a plain run of the teacher model (cache lookup, checkpoints, caching).
    """
    teacher: Teacher = job.teacher
    settings = plan.settings
    check_tokenizers(teacher, job.model, settings.load)
    tokenizer = load_tokenizer(teacher.model, settings.load)
    teacher_job = dataclasses.replace(
        job, model=teacher.model, protocol=teacher.protocol, finetune_id=teacher.finetune_id, targets=(), teacher=None
    )
    encoder = Encoder(tokenizer, job.label_space, teacher.protocol.max_length, settings.cache_dir)
    with claim(settings.results_dir, teacher.finetune_id):  # the same claim a plain run of the teacher takes
        ft = fine_tuned(teacher_job, plan, tokenizer, encoder, dataclasses.replace(runtime, precision=teacher.protocol.precision))
    model = load_classifier(teacher.model, job.label_space, tokenizer.pad_token_id, settings.load)
    check_head(teacher, ft.state, model, job.label_space)
    model.load_state_dict(ft.state)
    model.to(runtime.device)
    logits = logits_of(model, train, job.protocol.eval_batch_size, tokenizer.pad_token_id, runtime)
    del model
    return logits

"""DINO baseline (Caron et al., 2021): self-distillation without labels, the recipe of RAD-DINO.

Paper: a student and a teacher (EMA of the student, rate 0.996 -> 1 on a cosine schedule) with
a DINO head (3-layer MLP, L2-normalised bottleneck, weight-normalised output layer of K
prototypes); the teacher sees 2 global crops, the student those and several small local crops;
loss = cross-entropy between the teacher's centred, sharpened softmax (temperature warmed up from
0.04 to 0.04-0.07) and the student's softmax (0.1) over all pairs of different views; the centre
is an EMA (0.9) of the teacher's outputs. Built from lightly's ``DINOProjectionHead`` and
``DINOLoss`` (its centre is a persistent buffer, so it is in the checkpoint) and
``update_momentum``/``cosine_schedule``.

Our choices, for CPU budgets: K = 1024 prototypes (paper 65,536), head hidden 512, bottleneck
128; 2 global crops (area 0.4-1) + ``local_crops`` = 2 local crops (area 0.05-0.4; the paper
uses 6-10). Our ViT backbones have a fixed input size, so local crops are resampled to the full
input size: they cost a full pass each, hence the small count. CXR-safe augmentations as
SimCLR (no flips). The teacher temperature rises linearly over the first ``teacher_warmup``
fraction of the run and the EMA update runs at the start of each step -- both functions of the
step, so a resumed run is exact. No last-layer freezing. Downstream, the teacher's backbone is
the encoder (the paper evaluates the teacher).

``centering=sinkhorn`` (our option; DINOv2's and so RAD-DINO's centring) replaces the running
centre with 3 Sinkhorn-Knopp iterations over the batch's teacher outputs (lightly's
``sinkhorn_knopp``): each prototype gets an equal share of the batch, so neither collapse (one
prototype, or a uniform teacher) can happen through the centre; the loss is the same
cross-entropy (:meth:`DINO.distillation_loss`, equal to lightly's ``DINOLoss`` given the same
targets; tested).

Small batches: the centre momentum 0.9 was set for 2 x 1,024 teacher outputs per step. At our
batch sizes it follows the current batch, and the teacher collapses to uniform (loss -> ln K;
see ``teacher_entropy`` in the logs and docs/methods/comcl.md). ``center_momentum=0.99`` avoided
this on a toy problem (tested); on the phantom at batch 32 it only delays it, and Sinkhorn
centring stays uniform there (benchmarks/dino_loss_check.py), so the defaults stay the paper's.
In every 150-step variant we ran (head batch norm, no local crops, real CXRs, batch 256, learnt
prototype norms, a frozen last layer) the teacher's information about the image
(``teacher_batch_entropy - teacher_entropy``) falls from the first steps. What makes the loss
fall on a CPU: weak global crops (``global_crop_area=0.8,1.0``), no local crops and 1,000-2,000
steps (covid_radiography, 64 px): the information recovers after ~300 steps and the loss falls
below its start (both pre-training seeds tried). At 64 px, strong or local crops hold too
little of the image for the student to predict the teacher (docs/methods/comcl.md, fourth
round). The defaults stay the paper's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lightly.loss import DINOLoss
from lightly.loss.capi_loss import sinkhorn_knopp
from lightly.models.modules.heads import DINOProjectionHead

from cxrcl.data.views import AugmentConfig, augment
from cxrcl.methods.base import MethodConfig, MomentumMethod
from cxrcl.models.backbones import TokenBackbone
from cxrcl.models.momentum import MomentumCopy


@dataclass(frozen=True)
class DINOConfig(MethodConfig):
    proj_hidden_dim: int = 512
    bottleneck_dim: int = 128
    num_prototypes: int = 1024
    local_crops: int = 2
    global_crop_area: tuple[float, float] = (0.4, 1.0)
    local_crop_area: tuple[float, float] = (0.05, 0.4)
    momentum: float = 0.996
    momentum_schedule: str = "cosine"
    student_temp: float = 0.1
    teacher_temp: tuple[float, float] = (0.04, 0.04)
    teacher_warmup: float = 0.3
    center_momentum: float = 0.9
    centering: str = "mean"
    norm_last_layer: bool = True
    freeze_last_layer: float = 0.0

    def __post_init__(self):
        if self.centering not in ("mean", "sinkhorn"):
            raise ValueError(f"centering must be mean (DINO's centre) or sinkhorn (DINOv2's), got {self.centering!r}")
        if self.local_crops < 0:
            raise ValueError(f"local_crops must be >= 0, got {self.local_crops}")
        if not 0 <= self.teacher_warmup <= 1:
            raise ValueError(f"teacher_warmup must be a fraction of the run in [0, 1], got {self.teacher_warmup}")
        if not 0 <= self.freeze_last_layer <= 1:
            raise ValueError(f"freeze_last_layer must be a fraction of the run in [0, 1], got {self.freeze_last_layer}")


class DINO(MomentumMethod):
    name = "dino"
    config_class = DINOConfig

    def __init__(self, config: DINOConfig, backbone):
        super().__init__(config, backbone)
        c = config
        self.head = self._dino_head()
        # the weight-normalised head cannot be deep-copied: the teacher's is built afresh
        self.teacher = MomentumCopy(self.backbone, self.head,
                                    copies=[copy.deepcopy(self.backbone), self._dino_head()])
        self.criterion = DINOLoss(output_dim=c.num_prototypes, teacher_temp=c.teacher_temp[1],
                                  student_temp=c.student_temp, center_momentum=c.center_momentum)
        self.global_aug = AugmentConfig(crop_area=c.global_crop_area)
        self.local_aug = AugmentConfig(crop_area=c.local_crop_area)

    def _dino_head(self) -> DINOProjectionHead:
        c = self.config
        return DINOProjectionHead(self.backbone.dim, c.proj_hidden_dim, c.bottleneck_dim,
                                  c.num_prototypes, batch_norm=c.proj_batch_norm,
                                  norm_last_layer=c.norm_last_layer)

    def student_head(self, features: torch.Tensor) -> torch.Tensor:
        """The student's DINO head; during the first ``freeze_last_layer`` fraction of the run the
        output layer (the prototypes) gets no gradient (DINO freezes it for the first epoch)."""
        if self.progress >= self.config.freeze_last_layer:
            return self.head(features)
        # the same head, with the output layer's parameters detached (the loop has no hook
        # between backward and the optimizer step for lightly's cancel_last_layer_gradients)
        frozen = {f"last_layer.{n}": p.detach() for n, p in self.head.last_layer.named_parameters()}
        return torch.func.functional_call(self.head, frozen, (features,))

    def teacher_temp_now(self) -> float:
        start, end = self.config.teacher_temp
        warm = self.config.teacher_warmup
        return end if warm == 0 else start + (end - start) * min(1.0, self.progress / warm)

    def training_step(self, images, generator):
        m = self.momentum_now()
        self.teacher.update(m)
        b = images.shape[0]
        globals_ = torch.cat([augment(images, generator, self.global_aug) for _ in range(2)])
        locals_ = [augment(images, generator, self.local_aug) for _ in range(self.config.local_crops)]
        student = self.student_head(self.backbone(torch.cat([globals_, *locals_]))).split(b)
        with torch.no_grad():
            teacher = self.teacher(globals_).split(b)
        t = self.teacher_temp_now()
        if self.config.centering == "sinkhorn":
            targets = self.sinkhorn_targets(torch.cat(teacher), t)
            diagnostics = self.target_entropies(targets)
            loss = self.distillation_loss(list(targets.split(b)), list(student))
        else:
            diagnostics = self.teacher_entropies(torch.cat(teacher), t)  # before the centre moves
            loss = self.criterion(list(teacher), list(student), teacher_temp=t)
        return {"loss": loss, "momentum": torch.tensor(m), "teacher_temp": torch.tensor(t), **diagnostics}

    @staticmethod
    @torch.no_grad()
    def sinkhorn_targets(teacher: torch.Tensor, temp: float) -> torch.Tensor:
        """DINOv2's centring: 3 Sinkhorn-Knopp iterations on teacher logits / temp over the
        (DDP-gathered) batch of global crops, so every prototype gets an equal share of the batch
        and no running centre is needed (lightly's ``sinkhorn_knopp``). [2B, K] -> rows sum to 1."""
        with torch.autocast(device_type=teacher.device.type, enabled=False):
            return sinkhorn_knopp(teacher.float()[:, None] / temp, iterations=3, gather_distributed=True)[:, 0]

    def distillation_loss(self, targets: list[torch.Tensor], student: list[torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of the student's softmax (student_temp) against the teacher targets,
        averaged over all (teacher view, student view) pairs of different views, in float32."""
        with torch.autocast(device_type=student[0].device.type, enabled=False):
            logp = [F.log_softmax(s.float() / self.config.student_temp, dim=-1) for s in student]
            terms = [-(p * lp).sum(-1).mean() for i, p in enumerate(targets) for j, lp in enumerate(logp) if i != j]
            return torch.stack(terms).mean()

    @torch.no_grad()
    def teacher_entropies(self, teacher: torch.Tensor, temp: float) -> dict[str, torch.Tensor]:
        """:meth:`target_entropies` of DINO's centred, sharpened teacher softmax."""
        return self.target_entropies(
            torch.softmax((teacher.float() - self.criterion.center.reshape(1, -1)) / temp, dim=-1))

    @staticmethod
    @torch.no_grad()
    def target_entropies(p: torch.Tensor) -> dict[str, torch.Tensor]:
        """Collapse diagnostics of the teacher's targets ``p`` [2B, K] (nats; both at most ln K):
        ``teacher_entropy`` = mean entropy per image (ln K: a uniform teacher, the collapse that
        centring alone causes, and the loss can then not fall below ln K);
        ``teacher_batch_entropy`` = entropy of their batch mean (near 0: every image on one
        prototype, the collapse that sharpening alone causes)."""
        p = p.float()
        per_image = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
        mean = p.mean(0)
        return {"teacher_entropy": per_image, "teacher_batch_entropy": -(mean * mean.clamp_min(1e-12).log()).sum()}

    @property
    def encoder(self) -> TokenBackbone:
        return self.teacher[0]

"""Distillation from a strong open keyword encoder (the teacher) into the edge encoder (the student).

Modules: `teachers` (the `Teacher` interface, the EfficientWord-Net teacher, the `TEACHERS` registry), `targets`
(teacher embeddings computed once and cached on disk per teacher file and clip key), `loss` (the distillation
term with its training-only projection head). See docs/distillation.md.
"""

from training.distill.loss import DistillationTerm
from training.distill.targets import TeacherTargets, augmented_key, dataset_items, window_items
from training.distill.teachers import TEACHERS, EfficientWordNetTeacher, Teacher, load_teacher, teacher_record

__all__ = [
    "TEACHERS",
    "DistillationTerm",
    "EfficientWordNetTeacher",
    "Teacher",
    "TeacherTargets",
    "augmented_key",
    "dataset_items",
    "load_teacher",
    "teacher_record",
    "window_items",
]

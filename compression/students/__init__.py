"""Student architectures, a registry and one factory (``create_student``).

The architecture modules are imported here explicitly; importing one registers its constructors.
"""

from compression.students import ghostnet, qnn, resnet, slim, vgg  # noqa: F401  (registers the architectures)
from compression.students._registry import (
    StudentInfo,
    family_defaults,
    list_students,
    register_student,
    resolve_student,
)
from compression.students.factory import Budget, create_student, fit_width, measure

__all__ = [
    "Budget",
    "StudentInfo",
    "create_student",
    "family_defaults",
    "fit_width",
    "list_students",
    "measure",
    "register_student",
    "resolve_student",
]

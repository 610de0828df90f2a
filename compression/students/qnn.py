"""Low-bit QNN students: ResNet-20 with 4-bit or 2-bit LSQ convolutions, widened to a bit-ops budget.

Widening and Squeezing (arXiv:2002.00555): quantized features represent less than float ones, so a low-bit network
should be wider than its float counterpart; under a bit-ops budget (``Budget(..., metric="bitops")``) the width
search of :func:`~compression.students.create_student` widens a 4-bit student 64x cheaper per MAC than float.
The stem and classifier stay float, as in the LSQ paper (arXiv:1902.08153).
"""

from __future__ import annotations

from compression.students.resnet import _register_resnet

_register_resnet(20, "qnn4", family_default=True)
_register_resnet(20, "qnn2", family_default=True)

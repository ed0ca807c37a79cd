"""The accuracy budget an artifact is held to against the Keras model: the one place it is judged.

Used at export (gate: exit 1, nothing written), by the pipeline and its report (flag and recommend), and
wherever a bench row is judged. Numpy-free, framework-free.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """How much drift is acceptable: mIoU drop in points, pixel agreement as a fraction; None = no limit."""

    max_miou_drop: float | None = None
    min_agreement: float | None = None

    @property
    def is_set(self) -> bool:
        return self.max_miou_drop is not None or self.min_agreement is not None

    def miou_drop_ok(self, miou_drop_points: float | None) -> bool:
        if self.max_miou_drop is None:
            return True
        return miou_drop_points is not None and miou_drop_points <= self.max_miou_drop

    def agreement_ok(self, agreement: float | None) -> bool:
        if self.min_agreement is None:
            return True
        return agreement is not None and agreement >= self.min_agreement

    def within(self, miou_drop_points: float | None, agreement: float | None) -> bool:
        return self.miou_drop_ok(miou_drop_points) and self.agreement_ok(agreement)

    def violations(self, miou_drop_points: float | None, agreement: float | None) -> list[str]:
        """What exceeds the budget, in words (empty if within it)."""
        problems = []
        if not self.miou_drop_ok(miou_drop_points):
            measured = "not measured" if miou_drop_points is None else f"{miou_drop_points:.2f} points"
            problems.append(f"mIoU drop {measured} > budget {self.max_miou_drop:g}")
        if not self.agreement_ok(agreement):
            measured = "not measured" if agreement is None else f"{agreement:.4f}"
            problems.append(f"pixel agreement {measured} < budget {self.min_agreement:g}")
        return problems

    def describe(self) -> str:
        parts = []
        if self.max_miou_drop is not None:
            parts.append(f"mIoU drop ≤ {self.max_miou_drop:g} point{'s' if self.max_miou_drop != 1 else ''}")
        if self.min_agreement is not None:
            parts.append(f"pixel agreement ≥ {self.min_agreement:.0%}")
        return ", ".join(parts) + " vs Keras" if parts else "no accuracy budget"


NO_BUDGET = Budget()
DEMO_BUDGET = Budget(max_miou_drop=1.0, min_agreement=0.98)

"""CARLA's 23 semantic classes (ids 0..22), their names and the CARLA colour palette."""

from __future__ import annotations

import numpy as np

CARLA_CLASSES: tuple[str, ...] = (
    "unlabeled", "building", "fence", "other", "pedestrian", "pole", "roadline", "road",
    "sidewalk", "vegetation", "vehicles", "wall", "trafficsign", "sky", "ground", "bridge",
    "railtrack", "guardrail", "trafficlight", "static", "dynamic", "water", "terrain",
)

CARLA_PALETTE = np.array(
    [
        (0, 0, 0), (70, 70, 70), (100, 40, 40), (55, 90, 80), (220, 20, 60),
        (153, 153, 153), (157, 234, 50), (128, 64, 128), (244, 35, 232), (107, 142, 35),
        (0, 0, 142), (102, 102, 156), (220, 220, 0), (70, 130, 180), (81, 0, 81),
        (150, 100, 100), (230, 150, 140), (180, 165, 180), (250, 170, 30), (110, 190, 160),
        (170, 120, 50), (45, 60, 150), (145, 170, 100),
    ],
    dtype=np.uint8,
)

CLASS_ID = {name: i for i, name in enumerate(CARLA_CLASSES)}


def class_names(n_classes: int) -> list[str]:
    """Default names for ``n_classes`` ids: CARLA's for its 23 classes, else ``class_0``… (a model of another
    class count is not CARLA's, and its ids mean something else)."""
    if n_classes == len(CARLA_CLASSES):
        return list(CARLA_CLASSES)
    return [f"class_{i}" for i in range(n_classes)]


def colorize(class_map: np.ndarray) -> np.ndarray:
    """H×W class ids → H×W×3 uint8 picture in the CARLA palette (ids beyond it cycle)."""
    return CARLA_PALETTE[np.asarray(class_map, dtype=np.int64) % len(CARLA_PALETTE)]

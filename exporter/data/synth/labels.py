"""The 14 CARLA class ids the synthetic scenes paint (the label side of every primitive)."""

from __future__ import annotations

from exporter.classes import CARLA_CLASSES, CLASS_ID

SKY = CLASS_ID["sky"]
BUILDING = CLASS_ID["building"]
FENCE = CLASS_ID["fence"]
PEDESTRIAN = CLASS_ID["pedestrian"]
POLE = CLASS_ID["pole"]
ROADLINE = CLASS_ID["roadline"]
ROAD = CLASS_ID["road"]
SIDEWALK = CLASS_ID["sidewalk"]
VEGETATION = CLASS_ID["vegetation"]
VEHICLES = CLASS_ID["vehicles"]
WALL = CLASS_ID["wall"]
TRAFFICSIGN = CLASS_ID["trafficsign"]
TRAFFICLIGHT = CLASS_ID["trafficlight"]
TERRAIN = CLASS_ID["terrain"]

N_CLASSES = len(CARLA_CLASSES)

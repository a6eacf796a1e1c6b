"""Imager adapters: pure functions from an image path (and its sidecar metadata) to a record.

Nothing here imports the service or a database.
"""

from imager_adapters.record import ImageRecord, Rejection
from imager_adapters.wells import GeometryError, PlateType, parse_plate_type, plate_type

__all__ = [
    "GeometryError",
    "ImageRecord",
    "PlateType",
    "Rejection",
    "parse_plate_type",
    "plate_type",
]

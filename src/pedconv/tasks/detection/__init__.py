"""Object detection: the COCO instances format (:mod:`.coco`) and what trains on it."""

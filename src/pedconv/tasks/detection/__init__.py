"""Object detection (``pedconv detect``, Table 2): the COCO instances format (:mod:`.coco`), COCO box AP
(:mod:`.metrics`), the task on the training pipeline (:mod:`.task`) and its command (:mod:`.command`)."""

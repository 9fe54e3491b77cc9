"""The ``grounded-sam`` command line: thin layers over :class:`grounded_sam.GroundedSAM`.

Commands: ``segment`` (phrases -> overlay, masks, JSON), ``everything`` (SAM's automatic
masks), ``label`` (a folder -> COCO / YOLO / VOC dataset, resumable) and ``shell`` (many
phrases on one indexed image). Entry point: :func:`grounded_sam.cli.main.main`.
"""

"""``python -m ssd.demo``: detections drawn on a camera, a video, or a folder/glob of images.

The role of ssd.pytorch's ``demo/live.py``. :mod:`.sources` reads frames, :mod:`.outputs`
writes annotated videos or pictures (atomically), :mod:`.display` opens the ``--show`` window,
:mod:`.runner` runs the detector over the frames (batching when that is faster) and
:mod:`.cli` is the command line.
"""

"""The ``--show`` window (OpenCV HighGUI), and why there may be none.

``opencv-python-headless`` (this project's dependency: it installs anywhere) has no GUI; a
desktop needs ``opencv-python`` instead, plus a display. :func:`gui_unavailable_reason` says
which of the two is missing before any window is tried.
"""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np

QUIT_KEYS = (ord("q"), ord("Q"), 27)  # q or Esc


def opencv_gui_backend() -> str:
    """The ``GUI:`` entry of OpenCV's build information (``NONE`` for headless builds)."""
    for line in cv2.getBuildInformation().splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key.strip() == "GUI":
            return value.strip() or "NONE"
    return "UNKNOWN"


def gui_unavailable_reason() -> str | None:
    """``None`` when a window can be opened, else why not (in words)."""
    if opencv_gui_backend().upper() == "NONE":
        return ("this OpenCV build has no GUI (opencv-python-headless); for windows run "
                "`pip uninstall opencv-python-headless && pip install opencv-python`")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        return "no display here (neither $DISPLAY nor $WAYLAND_DISPLAY is set)"
    return None


class Window:
    """An OpenCV window; :meth:`show` returns False once the user pressed q/Esc or closed it.

    Args:
        title: window title.
        wait_ms: how long each frame waits for a key (0: until a key, for still images).
    """

    def __init__(self, title: str = "ssd.demo (q quits)", wait_ms: int = 1) -> None:
        self.title, self.wait_ms = title, int(wait_ms)
        cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)

    def show(self, bgr: np.ndarray) -> bool:
        cv2.imshow(self.title, bgr)
        key = cv2.waitKey(self.wait_ms) & 0xFF
        if key in QUIT_KEYS:
            return False
        return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        cv2.destroyWindow(self.title)
        cv2.waitKey(1)

"""ssd.pytorch's ``layers`` import path, kept for old scripts run from the repository root.

``from layers import *`` gives ``PriorBox``, ``Detect``, ``L2Norm``, ``MultiBoxLoss`` and the
box utilities, as it did there. Everything is a re-export from the :mod:`ssd` package.
"""

from . import box_utils, functions, modules
from .box_utils import *  # noqa: F403
from .box_utils import __all__ as _box_all
from .functions import *  # noqa: F403
from .functions import __all__ as _functions_all
from .modules import *  # noqa: F403
from .modules import __all__ as _modules_all

__all__ = ["box_utils", "functions", "modules", *_functions_all, *_modules_all, *_box_all]

"""The one place where core's errors become ``QgsProcessingException``.

Expected failures (bad input, missing packages, cancel) reach the user as the core message alone;
anything else keeps its type name and traceback in the log, so bugs are reported, not hidden.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator

from qgis.core import QgsProcessingException, QgsProcessingFeedback

from core.errors import CanceledError, RoadLandcoverError


@contextlib.contextmanager
def core_errors_as_processing(feedback: QgsProcessingFeedback | None, step: str) -> Iterator[None]:
    """Run a core call, translating its errors for Processing."""
    try:
        yield
    except QgsProcessingException:
        raise
    except CanceledError as exc:
        raise QgsProcessingException(f"{step} was canceled; no partial output was kept.") from exc
    except RoadLandcoverError as exc:
        raise QgsProcessingException(f"{step}: {exc}") from exc
    except MemoryError as exc:
        raise QgsProcessingException(
            f"{step} ran out of memory; use a smaller batch size or tile size, or a smaller extent."
        ) from exc
    except Exception as exc:
        if feedback is not None:
            feedback.reportError(traceback.format_exc(), False)
        raise QgsProcessingException(
            f"{step} failed with an unexpected {type(exc).__name__}: {exc}. This is a bug: please report it "
            "with the log above."
        ) from exc

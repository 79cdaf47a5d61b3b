"""The prunescope Python client: the REST API from a notebook or a script, or the same service in-process.

    from api.client import Client
    client = Client("http://127.0.0.1:8000")      # or Client() with $PRUNESCOPE_URL, or Client.local()
    job = client.sense("digits-cnn", "digits", checkpoint="ck.pt", levels="0:0.95:0.05")
    client.points(job)          # a DataFrame
    client.plot(job, "top1")    # a plotly Figure

Importing this package imports neither torch nor the server's code (see docs/client.md).
"""

from api.client.core import Client, dataset_options
from api.client.errors import JobFailed, PrunescopeError
from api.client.resources import Artifact, Dataset, Event, Experiment, Job, Model, ScheduleCheck

__all__ = [
    "POINT_COLUMNS", "Artifact", "Client", "Dataset", "Event", "Experiment", "Job", "JobFailed", "Model",
    "PrunescopeError", "ScheduleCheck", "dataset_options",
]


def __getattr__(name: str) -> object:
    """``POINT_COLUMNS`` (see :mod:`api.client.frames`), resolved on first use."""
    if name == "POINT_COLUMNS":
        from api.client import frames

        return frames.POINT_COLUMNS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

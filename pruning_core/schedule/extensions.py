"""Checking a schedule's thinning extensions (their ``arch`` and ``dataset``) against the job."""

from __future__ import annotations

from collections.abc import Sequence

from .spec import Schedule

DISTILLER_DATASETS: dict[str, tuple[tuple[int, int, int], int]] = {  # name -> (input shape, classes)
    "cifar10": ((3, 32, 32), 10), "imagenet": ((3, 224, 224), 1000), "mnist": ((1, 28, 28), 10),
}


def check_extensions(schedule: Schedule, *, arch: str, dataset: str, input_shape: Sequence[int] | None = None,
                     num_classes: int | None = None) -> list[str]:
    """Check each extension's ``arch`` and ``dataset`` against the job; returns notes, raises on a mismatch.

    ``arch`` compares after Distiller aliases (``resnet20_cifar`` = ``resnet20-cifar``). ``dataset``
    matches by name, or a ``synthetic``/``imagefolder`` job whose input shape and class count are those
    of the named dataset stands in for it (noted).
    """
    from ..names import canonical_model_name

    notes = []
    for name, spec in schedule.extensions.items():
        want, have = spec.args["arch"], arch
        if (canonical_model_name(want) or want) != (canonical_model_name(have) or have):
            raise schedule.error(("extensions", name, "arch"), f"the schedule is for arch {want!r}, the job's "
                                 f"model is {have!r}")
        want_ds = str(spec.args["dataset"]).lower()
        if want_ds == dataset.lower():
            continue
        shape, classes = DISTILLER_DATASETS.get(want_ds, (None, None))
        stands_in = (dataset in ("synthetic", "imagefolder") and shape is not None and input_shape is not None
                     and tuple(input_shape) == shape and num_classes == classes)
        if not stands_in:
            raise schedule.error(("extensions", name, "dataset"), f"the schedule is for dataset {want_ds!r}, the "
                                 f"job uses {dataset!r}" + (f" with input {tuple(input_shape)} and {num_classes} "
                                                            "classes" if input_shape is not None else ""))
        notes.append(f"extension {name!r}: dataset {dataset!r} {tuple(input_shape or ())} stands in for {want_ds!r}")
    return notes

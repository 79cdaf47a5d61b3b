"""Distiller YAML pruning schedules: parse, validate, resolve against a model, write back.

One module per concept: ``errors`` (ScheduleError), ``loader`` (bounded YAML with line numbers), ``spec``
(the dataclasses), ``parse`` (validation against the declared classes; load, dump, write), ``resolve``
(names and globs against a model), ``extensions`` (thinning extensions against the job). Everything is
re-exported here; the package imports no torch.

A schedule is data (``version: 1``, ``pruners:``, ``lr_schedulers:``, ``policies:``), as in Distiller.
Every mistake is a :class:`ScheduleError` that names the key path and the line it sits on, because a
silently ignored key in a long schedule costs a whole training run. The parser is table-driven
(:data:`PRUNER_CLASSES`, :data:`REGULARIZER_CLASSES`, :data:`EXTENSION_CLASSES` in declarations.py and
:data:`LR_SCHEDULERS` in lr_table.py, all torch-free): supporting a class means adding a declaration.
``quantizers`` are refused (out of scope: prunescope prunes).

Distiller's published schedules name parameters as ``torch.nn.DataParallel`` saw them
(``module.layer1.0.conv1.weight``, ``features.module.0.weight``); :func:`resolve_schedule` maps them
to the model's names and records each mapping in ``Schedule.renames`` so it can be shown.
"""

from __future__ import annotations

from ..declarations import (  # noqa: F401 - the parser's tables, re-exported as they always were
    EXTENSION_CLASSES,
    GROUP_TYPES,
    PRUNER_CLASSES,
    REGULARIZER_CLASSES,
    REGULARIZER_GROUP_TYPES,
    THINNING_FUNCS,
    THRESHOLD_CRITERIA,
)
from ..lr_table import LR_SCHEDULERS, LR_UNSUPPORTED  # noqa: F401
from .errors import (  # noqa: F401
    ScheduleError,
)
from .extensions import (  # noqa: F401
    DISTILLER_DATASETS,
    check_extensions,
)
from .loader import (  # noqa: F401
    YAML_MAX_ALIASES,
    YAML_MAX_BYTES,
    YAML_MAX_DEPTH,
    YAML_MAX_NODES,
)
from .parse import (  # noqa: F401
    POLICY_KINDS,
    POLICY_REFUSED,
    REFUSED,
    SECTIONS,
    TOP_LEVEL,
    check_schedule,
    dump_schedule,
    load_schedule,
    lr_scheduler_class,
    parse_schedule,
    write_schedule,
)
from .resolve import (  # noqa: F401
    match_params,
    model_parameter_names,
    resolve_names,
    resolve_schedule,
    resolve_weights,
    strip_data_parallel,
)
from .spec import (  # noqa: F401
    ExtensionSpec,
    LRSchedulerSpec,
    PolicySpec,
    PrunerSpec,
    RegularizerSpec,
    Schedule,
)

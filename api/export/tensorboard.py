"""A job as TensorBoard event files: the same scalars as the MLflow run, the spec and CSV as text, the figure.

Written with tensorboard's own event writer and protos (no torch, no TensorFlow), into ``DIR/<run name>``
so several jobs exported into one folder are several runs side by side. The curves' figure is an image
only where plotly can render PNGs (the ``kaleido`` package); without it the image is skipped and a text
entry ``prunescope/figure`` says so.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from api.export.content import FOLDER, JobExport

MISSING = "TensorBoard export needs the tensorboard package: pip install 'prunescope[tensorboard]'"
NO_IMAGE = "figure not rendered: plotly needs the kaleido package to draw PNGs (pip install kaleido)"


def export_tensorboard(export: JobExport, directory: str | Path) -> dict[str, str | bool]:
    """Write ``export`` under ``directory``; returns ``{logdir, image}`` (whether the figure was drawn)."""
    try:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.compat.proto.tensor_pb2 import TensorProto
        from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as exc:
        raise ImportError(MISSING) from exc

    logdir = Path(directory) / export.run_name
    logdir.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(logdir))
    now = time.time()

    def write(step: int, value: Summary.Value) -> None:
        writer.add_event(Event(wall_time=now, step=step, summary=Summary(value=[value])))

    def text(tag: str, body: str) -> None:
        metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
        tensor = TensorProto(dtype=7, string_val=[body.encode()],  # 7: DT_STRING
                             tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
        write(0, Summary.Value(tag=tag, metadata=metadata, tensor=tensor))

    for key, series in {**export.point_series(), **export.epoch_series()}.items():
        for step, value in series:
            write(step, Summary.Value(tag=key, simple_value=value))
    for key, value in export.final_metrics().items():
        write(0, Summary.Value(tag=key, simple_value=value))
    tags = export.tags()
    text(f"{FOLDER}/tags", "\n".join(f"    {k}: {v}" for k, v in tags.items()))
    for name, body in export.texts().items():
        text(f"{FOLDER}/{name}", "\n".join(f"    {line}" for line in body.splitlines()))  # code block
    image = False
    if export.points:
        if importlib.util.find_spec("kaleido") is not None:
            png = export.figure().to_image(format="png")
            write(0, Summary.Value(tag=f"{FOLDER}/sensitivity", image=Summary.Image(
                height=500, width=700, colorspace=4, encoded_image_string=png)))
            image = True
        else:
            text(f"{FOLDER}/figure", NO_IMAGE)
    writer.flush()
    writer.close()
    return {"logdir": str(logdir), "image": image}

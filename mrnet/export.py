"""`mrnet export`: a checkpoint as an ONNX model, for other runtimes.

Input ``log_mel`` float32 [batch, n_mels, frames], both batch and frames dynamic: the
log-mel as the cache stores it (pipeline.features.log_mel of mono audio at the
checkpoint's sample rate, rounded to float16). Output ``logits`` [batch, n_labels]:
softmax (task single) or a sigmoid per label (task multi) gives the probabilities.

The ONNX metadata (``metadata_props``) says how to make the input and read the output:
mrnet.feature_config (JSON), mrnet.labels (JSON list, output order), mrnet.task,
mrnet.thresholds (JSON, multi-label), mrnet.model_config (JSON), mrnet.version.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from mrnet import checkpoint
from mrnet.options import ExportOptions
from pipeline import __version__
from pipeline.atomic import AGAIN, remove_dead_temps, write_atomic, writing
from pipeline.errors import BadInput

EXTRA = "pip install 'mrnet[export]'"
OPSET = 18


def _require_onnx():
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError as e:
        raise BadInput(
            f"mrnet export needs the onnx packages ({e.name} is missing): {EXTRA}"
        ) from None
    return onnx


def metadata(ckpt) -> dict[str, str]:
    """The ONNX file's metadata: the checkpoint's features, labels, task, thresholds, model."""
    return {
        "mrnet.feature_config": json.dumps(ckpt.feature_config),
        "mrnet.labels": json.dumps(list(ckpt.labels)),
        "mrnet.task": ckpt.task,
        "mrnet.thresholds": json.dumps(ckpt.thresholds),
        "mrnet.model_config": json.dumps(ckpt.model_config.to_dict()),
        "mrnet.version": __version__,
        "mrnet.input": "log_mel float32 [batch, n_mels, frames]: the cache's log-mel "
        "(see mrnet.feature_config)",
        "mrnet.output": "logits [batch, n_labels]: softmax (task single) or sigmoid "
        "(task multi) gives probabilities",
    }


@dataclass
class Exported:
    """The ONNX file `run` wrote and the metadata it carries."""

    out: Path
    metadata: dict[str, str]

    def summary(self) -> str:
        """What was written: the file, its input and output, its labels."""
        labels = ", ".join(json.loads(self.metadata["mrnet.labels"]))
        return (
            f"wrote {self.out}: input log_mel [batch, n_mels, frames], output logits over "
            f"{labels}; feature settings and labels in its metadata"
        )


def run(opts: ExportOptions) -> Exported:
    """`mrnet export`: write ``opts.out``."""
    return Exported(opts.out, export(opts))


def export(opts: ExportOptions) -> dict[str, str]:
    """Write ``opts.out``; returns the metadata it carries."""
    opts.check()
    onnx = _require_onnx()
    ckpt = checkpoint.load(opts.checkpoint)
    if ckpt.model_config.input_layers:
        raise BadInput(
            "this model reads WavLM features (a --features wavlm cache or --frontend wavlm) "
            "and mrnet export writes log-mel models only: WavLM itself is not put into the "
            "ONNX graph; score it with mrnet evaluate or predict --ssl-model DIR"
        )
    model = checkpoint.load_model(ckpt)
    with writing(opts.out, rerun=AGAIN):  # before the export's seconds of work
        opts.out.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(opts.out.parent, os.W_OK):
        raise BadInput(
            f"cannot write into {opts.out.parent} (read-only or not yours); pass "
            "an --out you may write"
        )
    n_mels = ckpt.model_config.n_mels
    example = torch.zeros(2, n_mels, 300)
    dims = {0: torch.export.Dim("batch", min=1), 2: torch.export.Dim("frames", min=16)}
    with _quiet():
        program = torch.onnx.export(
            model,
            (example,),
            input_names=["log_mel"],
            output_names=["logits"],
            dynamic_shapes=(dims,),
            dynamo=True,
            opset_version=OPSET,
            verbose=False,
        )
    proto = program.model_proto
    meta = metadata(ckpt)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    remove_dead_temps(opts.out.parent)  # left by an export killed while writing
    write_atomic(opts.out, proto.SerializeToString(), AGAIN)
    return meta


@contextlib.contextmanager
def _quiet():
    """The exporter's progress lines and warnings are not the user's business."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)

"""`mrnet train`: cache -> RUN/ (last.pt, best.pt, metrics.csv, curves.png, tb/). The
loop is mrnet.train.loop; see its docstring for the modules beside it."""

from mrnet.train.loop import run, train
from mrnet.train.report import TIMING_COLUMNS, Trained

__all__ = ["TIMING_COLUMNS", "Trained", "run", "train"]

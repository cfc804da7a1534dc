"""Where a run's epochs go besides RUN/metrics.csv and RUN/curves.png: TensorBoard
(`--tensorboard`, RUN/tb/) and Weights & Biases (`--wandb PROJECT`). Only the first
torchrun process creates a `Trackers`.

W&B: the run's config at the start, every metrics.csv column at each epoch (step =
epoch), and at the end the figures of the epoch best.pt holds (summary keys ``best/...``).
The W&B run id is the mrnet run id, stored in every checkpoint: `--resume` continues
the same W&B run. WANDB_MODE (offline, disabled) and WANDB_DIR are honoured; without
WANDB_DIR the files go to RUN/wandb/.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

from pipeline.errors import BadInput

EXTRA = "pip install 'mrnet[tracking]'"


def require_wandb() -> None:
    """BadInput naming the extra when the wandb client is not installed."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise BadInput(f"--wandb needs the wandb client, which is not installed: {EXTRA}") from None


class Trackers:
    """TensorBoard and/or W&B for one run (each only when asked for)."""

    def __init__(
        self, out: Path, config: dict, run_id: str, first_epoch: int, stack: ExitStack
    ) -> None:
        self.tb = self.wandb = None
        if config.get("tensorboard"):
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"), purge_step=first_epoch)
            self.tb = stack.enter_context(writer)
        if config.get("wandb"):
            import wandb

            self.wandb = wandb.init(
                project=config["wandb"],
                name=config.get("wandb_name"),
                id=run_id,
                resume="allow",
                config=config,
                dir=None if os.environ.get("WANDB_DIR") else str(out),  # it adds wandb/
            )
            run = self.wandb
            # a run that stops on an error (NaN loss, Ctrl-C, a kill) is marked failed
            stack.push(lambda kind, *_: run.finish(exit_code=1 if kind else 0))

    def epoch(self, row: dict, scalars: tuple[str, ...]) -> None:
        """Log one metrics row (``scalars``: the columns TensorBoard plots)."""
        epoch = int(row["epoch"])
        if self.tb is not None:
            for k in scalars:
                self.tb.add_scalar(k, row[k], epoch)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(
                {k: v for k, v in row.items() if k != "epoch"} | {"epoch": epoch}, step=epoch
            )

    def best(self, row: dict | None) -> None:
        """The figures of the epoch best.pt holds, as the W&B run's summary."""
        if self.wandb is not None and row is not None:
            self.wandb.summary.update({f"best/{k}": v for k, v in row.items()})

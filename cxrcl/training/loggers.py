"""``cxrcl pretrain --logger csv|tensorboard``: Lightning Fabric's loggers beside metrics.jsonl.

``metrics.jsonl`` stays the run's record (CLI.md); a logger receives the same numbers at the
same steps through ``fabric.log_dict`` (rank zero only) for the tools users already have:

    RUN/logs/csv/version_N/metrics.csv            lightning.fabric.loggers.CSVLogger
    RUN/logs/tensorboard/version_N/events.*       lightning.fabric.loggers.TensorBoardLogger

Our choice: one ``version_N`` folder per invocation (a ``--resume`` opens the next one; Fabric's
CSV writer would otherwise delete the earlier file), so each folder holds the steps that
invocation ran. TensorBoard needs the ``logging`` extra (``pip install 'cxrcl[logging]'``).
"""

from __future__ import annotations

from pathlib import Path

from cxrcl.errors import CxrclError

LOGGERS = ("csv", "tensorboard")


def check_logger(name: str | None) -> None:
    """One sentence for an unknown logger or a missing package (before any run folder is made)."""
    if name is None:
        return
    if name not in LOGGERS:
        raise CxrclError(f"logger={name!r} is not supported; use one of {', '.join(LOGGERS)}")
    if name == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            try:
                import tensorboardX  # noqa: F401
            except ImportError:
                raise CxrclError("--logger tensorboard needs the tensorboard package: pip install "
                                 "'cxrcl[logging]' (or use --logger csv)") from None


def make_loggers(name: str | None, out: Path) -> list:
    """The Fabric loggers for ``name`` writing under ``out/logs`` (empty list for None)."""
    check_logger(name)
    if name is None:
        return []
    from lightning.fabric.loggers import CSVLogger, TensorBoardLogger

    root = Path(out) / "logs"
    if name == "csv":
        return [CSVLogger(root_dir=root, name="csv", flush_logs_every_n_steps=1)]
    return [TensorBoardLogger(root_dir=root, name="tensorboard")]


def loggable(record: dict) -> dict:
    """The numeric entries of a metrics.jsonl record (bools as 0/1), for ``fabric.log_dict``."""
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float, bool))}

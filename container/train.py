"""SageMaker's `train` program: read /opt/ml, train one of the three algorithms, write the model.

    docker run IMAGE train                      (SageMaker, or locally with -v JOB:/opt/ml)
    SAGEMAKER_BASE_DIR=JOB python -m review_nlp.container.train

Inputs: input/config/{hyperparameters,inputdataconfig,resourceconfig}.json and the channels
train (required), validation, test and auxiliary (vocab.txt, featurizer.json).
Outputs: model/ (the artifact), output/data/ (metrics.json, loss curves, topics),
checkpoints/ (resumed from at start), and output/failure with a non-zero exit code on error
(codes in `review_nlp.container.failure`).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

from ..errors import TrainingStopped, UserError
from ..models.training import StopSignal
from . import failure
from .distributed import shutdown_distributed
from .environment import DEFAULT_BASE_DIR, TrainingEnvironment
from .job import run_training
from .logs import configure_logging

logger = logging.getLogger(__name__)


class StopHandler:
    """SIGTERM handler for StopTrainingJob and spot interruptions.

    SageMaker sends SIGKILL 120 s after SIGTERM. Before the model's fit starts there is
    nothing to save, so the handler raises TrainingStopped at once, which also interrupts a
    blocking read of a Pipe mode FIFO. During fit it only sets
    `stop`: the models poll it between mini-batches, save a checkpoint and raise
    TrainingStopped themselves.
    """

    def __init__(self, stop: StopSignal):
        self.stop = stop
        self.raise_immediately = True

    def __call__(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        self.stop.request()
        if self.raise_immediately:
            logger.warning("Received %s before training started; stopping", name)
            raise TrainingStopped(f"{name} received before training started")
        logger.warning("Received %s: saving a checkpoint and stopping", name)

    def checkpoint_from_now_on(self) -> None:
        self.raise_immediately = False


def main(argv: list[str] | None = None) -> int:
    """Run one training job; return the process exit code."""
    del argv  # SageMaker passes only the word `train`; everything else comes from /opt/ml
    configure_logging()
    stop = StopSignal()
    handler = StopHandler(stop)
    previous_handler = signal.signal(signal.SIGTERM, handler)
    failure_path = os.path.join(os.environ.get("SAGEMAKER_BASE_DIR") or DEFAULT_BASE_DIR,
                                "output", "failure")
    try:
        env = TrainingEnvironment.from_environ()
        failure_path = str(env.failure_path)
        run_training(env, stop, on_fit_start=handler.checkpoint_from_now_on)
    except TrainingStopped as stopped:
        logger.warning("Training stopped before finishing: %s. Start the job again with the "
                       "same checkpoint folder to resume.", stopped)
        return failure.EXIT_STOPPED
    except UserError as error:
        # The user's mistake: the message states what to change, and a traceback would bury it.
        logger.error("Training failed: %s", error)
        return failure.write_failure(failure_path, error)
    except Exception as error:  # noqa: BLE001 - every error must reach the failure file
        logger.exception("Training failed")
        return failure.write_failure(failure_path, error)
    finally:
        shutdown_distributed()
        signal.signal(signal.SIGTERM, previous_handler)
    logger.info("Reporting training SUCCESS")
    return failure.EXIT_SUCCESS


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

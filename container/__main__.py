"""`python -m review_nlp.container train|serve`: the image's ENTRYPOINT.

SageMaker starts a training container as `docker run IMAGE train` and an endpoint or batch
transform container as `docker run IMAGE serve`; the word arrives here as the first argument.
"""

from __future__ import annotations

import os
import sys
import traceback

USAGE = "usage: python -m review_nlp.container {train|serve}"


def _report_import_failure(error: BaseException) -> int:
    """Write the failure file for an error raised while importing `train` (a broken install,
    a missing library), which happens before `train` can report anything itself."""
    base_dir = os.environ.get("SAGEMAKER_BASE_DIR") or "/opt/ml"
    path = os.path.join(base_dir, "output", "failure")
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    message = (f"The training program could not start ({type(error).__name__}: {error}); "
               f"the image is broken, so rebuild it or report the traceback below.\n\n{trace}")
    print(message, file=sys.stderr)
    if not os.path.exists(path):
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(message)
        except OSError as write_error:
            print(f"could not write {path}: {write_error}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else "train"
    if command == "train":
        try:
            from .train import main as train_main
        except Exception as error:  # noqa: BLE001 - reported through the failure file
            return _report_import_failure(error)
        return train_main(argv[1:])
    if command == "serve":
        from .serve import main as serve_main
        return serve_main(argv[1:])
    print(f"unknown command {command!r}; {USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

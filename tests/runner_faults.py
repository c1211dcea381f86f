"""Start ``autograder runner`` with one fault planted, for tests/test_runners.py.

A submission whose student id starts with "poison" ends the grading process
that takes it (as a grader crash on some submission would), on every runner.
Nothing else changes: the command line, the Dask worker and the pool are the
real ones.

    python tests/runner_faults.py runner --scheduler ADDRESS --name NAME
"""

import os
import sys

from autograder import job

_run_job = job.run_job


def _run_job_with_poison(grading_job, mode):
    if grading_job.student.startswith("poison"):
        os._exit(70)
    return _run_job(grading_job, mode)


job.run_job = _run_job_with_poison

if __name__ == "__main__":
    from autograder.cli import main

    sys.argv = ["autograder", *sys.argv[1:]]
    main()

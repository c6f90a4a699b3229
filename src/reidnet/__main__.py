"""`python -m reidnet` runs the command-line interface; a local service job also records its
exit status (reidnet.service.exit_status)."""

import os
from pathlib import Path

from reidnet.cli import main
from reidnet.service.exit_status import EXIT_STATUS_ENV, run_recording_exit_status

if __name__ == "__main__":  # worker processes (spawn) import this module: run only when executed
    if EXIT_STATUS_ENV in os.environ:
        run_recording_exit_status(main, Path(os.environ[EXIT_STATUS_ENV]))
    else:
        main()

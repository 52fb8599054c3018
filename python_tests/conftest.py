import os
import sys

import smplfast

# The training package (training/smplfast_train) is not installed; make it importable for the
# test_train_*.py tests. Only training/ goes on sys.path (never the repository root), so smplfast
# itself is still the installed package.
_TRAINING = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training")
if os.path.isdir(_TRAINING) and _TRAINING not in sys.path:
    sys.path.insert(0, _TRAINING)


def pytest_report_header(config):
    # The tests must exercise the installed package (with its compiled module), not a source folder.
    return f"smplfast {smplfast.__version__} from {os.path.dirname(smplfast.__file__)}; build: {smplfast.build_info()}"

import os

import smplfast


def pytest_report_header(config):
    # The tests must exercise the installed package (with its compiled module), not a source folder.
    return f"smplfast {smplfast.__version__} from {os.path.dirname(smplfast.__file__)}; build: {smplfast.build_info()}"

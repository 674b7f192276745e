import os

import pytest

# tests run on CPU with synthetic data only, and never need ../shared
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture
def run_validate(capsys):
    """Call the validate CLI in-process: returns (exit code, stdout, stderr)."""
    from archsearch.validate import main

    def _run(*args):
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run

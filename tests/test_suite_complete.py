"""`make test` installs the torch extra, so the torch tests (DataLoader workers, gloo collectives) run.

Those tests use ``pytest.importorskip`` so a developer without the extra can run the rest; this test
turns a missing torch into a failure of the full suite instead of a quiet row of skips.
"""

import importlib.util


def test_the_torch_extra_is_installed_so_its_tests_are_not_skipped() -> None:
    assert importlib.util.find_spec("torch") is not None, "install the torch extra: pip install -e '.[test,torch]'"

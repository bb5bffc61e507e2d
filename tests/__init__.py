"""hmtbench tests (a package, so ``from tests.conftest import ...`` works under a bare ``pytest``)."""

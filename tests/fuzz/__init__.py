"""Parser fuzzing shared by hypothesis (``tests/test_hardening_parsers.py``) and atheris (``fuzz_parsers.py``)."""

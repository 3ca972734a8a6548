"""Developer sessions: ``nox -s lint typecheck tests`` must stay green.

* ``tests``: the README's test command (derandomized hypothesis profile).
* ``explore``: the same properties with many more random examples.
* ``lint`` / ``typecheck``: ruff and ``mypy --strict``.
* ``bench``: the benchmarks (see docs/performance.md).
* ``fuzz``: coverage-guided fuzzing of the parsers with atheris (see tests/fuzz/README.md).
* ``docs``: builds the documentation site, failing on any warning or broken link.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def explore(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-m", "not kernel", *session.posargs,
                env={"HYPOTHESIS_PROFILE": "explore"})


@nox.session
def fuzz(session: nox.Session) -> None:
    """Coverage-guided fuzzing of the observed-state parsers (atheris); arguments after -- go to the driver."""
    session.install("-e", ".[test]", "atheris")
    session.run("python", "-m", "tests.fuzz.fuzz_parsers", *(session.posargs or ["--target", "all", "--runs", "30000"]))


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[bench]", "mypy", "nox")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    session.install("-e", ".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"})

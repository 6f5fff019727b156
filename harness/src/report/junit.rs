//! JUnit XML of verdicts, for CI systems.

//! Scenarios: YAML files in `scenarios/` that name kernel targets, checks with parameters and
//! the expected outcome; each (file, target) becomes one libtest-mimic trial.

pub mod load;
pub mod model;
pub mod run;
pub mod targets;

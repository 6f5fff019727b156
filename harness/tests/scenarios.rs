//! The gate: every `scenarios/**/*.yaml` × each target it names is one libtest-mimic trial,
//! `<path without .yaml>::<target>`. Works with `cargo test` (filters, --exact, --list,
//! --ignored) and `cargo nextest run`. Targets unavailable here are listed as ignored with the
//! reason on stderr; a suite that does not load (zero scenarios, unknown key, check id or
//! target) is one failing trial carrying every error with its location.

use std::sync::Arc;

use harness::fixtures::needs;
use harness::scenario::load::{load, scenarios_dir};
use harness::scenario::run::{run, Kernels};
use harness::scenario::targets::resolve;
use libtest_mimic::{Arguments, Trial};

fn main() -> std::process::ExitCode {
    harness::fixtures::one_vcpu_per_guest();
    harness::process::exit_on_interrupt("scenarios").expect("install the interrupt handler");
    let args = Arguments::from_args();
    let dir = scenarios_dir();
    let suite = match load(&dir) {
        Ok(s) => Arc::new(s),
        Err(errors) => {
            let msg = errors.join("\n");
            let t = Trial::test("scenarios::load", move || Err(msg.clone().into()));
            return libtest_mimic::run(&args, vec![t]).exit_code();
        }
    };
    let tools = harness::fixtures::runtime_tools();
    let kernels = Arc::new(Kernels::default());
    let mut trials = Vec::new();
    for (i, sc) in suite.scenarios.iter().enumerate() {
        for t in &sc.scenario.targets {
            let target = t.value.clone();
            let name = format!("{}::{target}", sc.stem);
            let mut need = resolve(&suite.targets, &target)
                .map(|_| ())
                .map_err(|e| e.to_string());
            if sc.scenario.checks.boots() {
                need = need.and(tools.clone());
            }
            let (suite, kernels, n) = (suite.clone(), kernels.clone(), name.clone());
            let trial = Trial::test(name, move || {
                run(&suite, &suite.scenarios[i], &target, &kernels, &n).map_err(Into::into)
            });
            trials.push(needs(trial, &need));
        }
    }
    trials.sort_by(|a, b| a.name().cmp(b.name()));
    libtest_mimic::run(&args, trials).exit_code()
}

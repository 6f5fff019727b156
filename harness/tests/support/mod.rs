//! What the libtest-mimic test binaries of `harness/tests/` share: `#[macro_use] mod support;`.

// Each test binary compiles this module and uses part of it.
#![allow(dead_code, unused_macros)]

use libtest_mimic::Failed;

/// A trial's outcome.
pub type R = Result<(), Failed>;

/// A named trial body.
pub type Case = (&'static str, fn() -> R);

/// Ends the trial as failed with the formatted message unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(::libtest_mimic::Failed::from(format!($($msg)+)));
        }
    };
}

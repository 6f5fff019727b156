//! QEMU x86_64: argument vectors (pure functions), the accelerator probe, and the running
//! machine with its serial console.

pub mod accel;
pub mod args;
pub mod machine;
pub mod slot;

//! btfgate harness: reads kernel packages and proves they deliver BTF (no logic here, only the module map).

pub mod atomic;
pub mod build;
pub mod checks;
pub mod codec;
pub mod compare;
pub mod error;
pub mod fetch;
pub mod fixtures;
pub mod guest;
pub mod image;
pub mod kernel;
pub mod mutate;
pub mod package;
pub mod process;
pub mod qemu;
pub mod report;
pub mod scenario;
pub mod size;

pub use error::{Error, Result};

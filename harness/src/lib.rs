//! btfgate harness: reads kernel packages and proves they deliver BTF (no logic here, only the module map).

pub mod atomic;
#[cfg(feature = "test-support")]
pub mod bomb;
pub mod build;
pub mod checks;
pub mod codec;
pub mod compare;
pub mod error;
pub mod fetch;
#[cfg(feature = "test-support")]
pub mod fixtures;
pub mod guest;
pub mod hash;
pub mod image;
pub mod kernel;
pub mod limits;
#[cfg(feature = "test-support")]
pub mod mutate;
pub mod package;
pub mod paths;
pub mod process;
pub mod qemu;
pub mod report;
pub mod scenario;
pub mod scratch;
pub mod size;
pub mod spool;

pub use error::{Error, Result};

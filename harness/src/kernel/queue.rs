//! Work on its way from the package reader to [`super::load`]'s worker: the kernel image and
//! each module's `.BTF`, held in memory while the queue has room, else in a spill file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::codec::Codec;
use crate::spool::Spooled;
use crate::{Error, Result};

/// Work for the worker.
pub(super) enum Job {
    /// The kernel image, spooled.
    Image(Spooled),
    Module {
        idx: usize,
        btf: QueuedBtf,
        /// The module file's codec when its `.BTF` is priced by compressing it alone (a zstd
        /// module, see `kernel::share`); `None` when the reader priced it.
        price: Option<Codec>,
    },
}

/// A module's `.BTF` on its way to the worker.
pub(super) enum QueuedBtf {
    /// Held (counted in the queue until the worker is done with it).
    Memory(Vec<u8>),
    /// Past [`limits::MODULE_BTF_QUEUE`]: waiting in the spill file.
    Spilled {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
}

impl QueuedBtf {
    pub(super) fn bytes(&self) -> Result<std::borrow::Cow<'_, [u8]>> {
        match self {
            QueuedBtf::Memory(v) => Ok(std::borrow::Cow::Borrowed(v)),
            QueuedBtf::Spilled { file, offset, len } => {
                let mut v = vec![0u8; *len as usize];
                file.read_exact_at(&mut v, *offset).map_err(|e| {
                    Error::failed(
                        "check module .BTF against vmlinux",
                        format!("read the module .BTF back from its spill file: {e}"),
                    )
                })?;
                Ok(std::borrow::Cow::Owned(v))
            }
        }
    }

    /// Bytes it holds in memory.
    pub(super) fn held(&self) -> u64 {
        match self {
            QueuedBtf::Memory(v) => v.len() as u64,
            QueuedBtf::Spilled { .. } => 0,
        }
    }
}

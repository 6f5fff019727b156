//! Library error type: every error names the file, the phase and what was expected.

use std::path::{Path, PathBuf};

/// Errors at the boundary "bytes from outside → btfgate's model".
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is malformed or not what the phase expected.
    #[error("{}: {phase}: {msg}", file.display())]
    BadInput {
        file: PathBuf,
        phase: &'static str,
        msg: String,
    },
    /// The input is well-formed but uses a format or feature btfgate does not read.
    #[error("{}: {phase}: unsupported: {msg}", file.display())]
    Unsupported {
        file: PathBuf,
        phase: &'static str,
        msg: String,
    },
    /// A signature is missing, does not verify, or was made by a key that is not trusted.
    #[error("{}: {phase}: untrusted: {msg}", file.display())]
    Untrusted {
        file: PathBuf,
        phase: &'static str,
        msg: String,
    },
    /// Reading the input failed at the OS level.
    #[error("{}: {phase}: {source}", file.display())]
    Io {
        file: PathBuf,
        phase: &'static str,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn bad(file: &Path, phase: &'static str, msg: impl Into<String>) -> Self {
        Error::BadInput {
            file: file.to_path_buf(),
            phase,
            msg: msg.into(),
        }
    }
    pub fn unsupported(file: &Path, phase: &'static str, msg: impl Into<String>) -> Self {
        Error::Unsupported {
            file: file.to_path_buf(),
            phase,
            msg: msg.into(),
        }
    }
    pub fn untrusted(file: &Path, phase: &'static str, msg: impl Into<String>) -> Self {
        Error::Untrusted {
            file: file.to_path_buf(),
            phase,
            msg: msg.into(),
        }
    }
    pub fn io(file: &Path, phase: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            file: file.to_path_buf(),
            phase,
            source,
        }
    }
    /// The phase this error happened in (for reports).
    pub fn phase(&self) -> &'static str {
        match self {
            Error::BadInput { phase, .. }
            | Error::Unsupported { phase, .. }
            | Error::Untrusted { phase, .. }
            | Error::Io { phase, .. } => phase,
        }
    }
}

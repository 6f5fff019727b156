//! The library's one error type: every error names the phase and what was expected, and the
//! file when there is one. Inputs from outside (packages, indexes, scenario files) fail as
//! `BadInput`/`Unsupported`/`Untrusted`/`Io`; a step btfgate runs itself (a build, a boot, a host
//! tool, an argument) fails as `Failed`. It is `Clone` and serializes as its message, so the
//! kernel model can keep "why this evidence is missing" beside the evidence.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Every error the library returns.
#[derive(Debug, Clone, thiserror::Error)]
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
        source: Arc<std::io::Error>,
    },
    /// A text file (a scenario, a targets file) is wrong at a line and column.
    #[error("{}:{line}:{column}: {msg}", file.display())]
    At {
        file: PathBuf,
        line: usize,
        column: usize,
        msg: String,
    },
    /// A step btfgate runs (a build, a boot, a host tool, an argument) did not succeed.
    #[error("{phase}: {msg}")]
    Failed { phase: &'static str, msg: String },
    /// A child process could not be started, failed, or ran past its deadline.
    #[error(transparent)]
    Process(Arc<crate::process::ProcessError>),
}

impl From<crate::process::ProcessError> for Error {
    fn from(e: crate::process::ProcessError) -> Self {
        Error::Process(Arc::new(e))
    }
}

impl serde::Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
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
            source: Arc::new(source),
        }
    }
    pub fn at(file: &Path, line: usize, column: usize, msg: impl Into<String>) -> Self {
        Error::At {
            file: file.to_path_buf(),
            line,
            column,
            msg: msg.into(),
        }
    }
    pub fn failed(phase: &'static str, msg: impl Into<String>) -> Self {
        Error::Failed {
            phase,
            msg: msg.into(),
        }
    }
    /// The same error in another phase's words: `context` is put before the message.
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        match self {
            Error::BadInput { file, phase, msg } => Error::BadInput {
                file,
                phase,
                msg: format!("{context}: {msg}"),
            },
            Error::Unsupported { file, phase, msg } => Error::Unsupported {
                file,
                phase,
                msg: format!("{context}: {msg}"),
            },
            Error::Untrusted { file, phase, msg } => Error::Untrusted {
                file,
                phase,
                msg: format!("{context}: {msg}"),
            },
            Error::Io {
                file,
                phase,
                source,
            } => Error::Io {
                file,
                phase,
                source: Arc::new(std::io::Error::new(
                    source.kind(),
                    format!("{context}: {source}"),
                )),
            },
            Error::Failed { phase, msg } => Error::Failed {
                phase,
                msg: format!("{context}: {msg}"),
            },
            Error::At {
                file,
                line,
                column,
                msg,
            } => Error::At {
                file,
                line,
                column,
                msg: format!("{context}: {msg}"),
            },
            Error::Process(e) => Error::Failed {
                phase: "process",
                msg: format!("{context}: {e}"),
            },
        }
    }
    /// The message alone, without the file and phase: for a caller whose own text already
    /// names them (a check detail that starts with the member's path).
    pub fn message(&self) -> String {
        match self {
            Error::BadInput { msg, .. } | Error::Failed { msg, .. } => msg.clone(),
            Error::Unsupported { msg, .. } => format!("unsupported: {msg}"),
            Error::Untrusted { msg, .. } => format!("untrusted: {msg}"),
            Error::Io { source, .. } => source.to_string(),
            Error::Process(e) => e.to_string(),
            Error::At {
                line, column, msg, ..
            } => format!("{line}:{column}: {msg}"),
        }
    }
    /// The phase this error happened in (for reports).
    pub fn phase(&self) -> &'static str {
        match self {
            Error::BadInput { phase, .. }
            | Error::Unsupported { phase, .. }
            | Error::Untrusted { phase, .. }
            | Error::Io { phase, .. }
            | Error::Failed { phase, .. } => phase,
            Error::Process(_) => "process",
            Error::At { .. } => "parse",
        }
    }
}

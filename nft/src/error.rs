//! Error type of the crate: every error names what was being done.

use std::io;

/// Errors from encoding, talking to the kernel, or decoding replies.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket operation failed.
    #[error("nftables netlink {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel rejected the transaction; nothing of it was applied.
    #[error("nftables transaction rejected at message {index} ({what}): {errno_name} (errno {errno}){}", .message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kernel {
        /// Index of the failing message within the batch (0-based).
        index: usize,
        /// Operation and object, e.g. `add set ip podnet service-ips`.
        what: String,
        errno: i32,
        errno_name: String,
        /// Extended-ack message from the kernel, if any.
        message: Option<String>,
    },
    /// A dump request failed in the kernel.
    #[error("nftables {what}: {errno_name} (errno {errno})")]
    Dump {
        what: String,
        errno: i32,
        errno_name: String,
    },
    /// The caller built something the encoder cannot express.
    #[error("invalid nftables object: {0}")]
    Invalid(String),
    /// A kernel reply could not be parsed.
    #[error("decoding nftables netlink reply: {0}")]
    Decode(String),
}

impl Error {
    /// The errno of a kernel-side failure.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } | Error::Dump { errno, .. } => Some(*errno),
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Short errno description (`ENOENT: No such file or directory`).
pub(crate) fn errno_name(errno: i32) -> String {
    let s = io::Error::from_raw_os_error(errno).to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

//! The error of every netlink request: what was being done, and the kernel's answer.

use std::io;

/// A failed netlink request. `op` says what was being done and to what
/// (e.g. `creating veth veth1234abcd`).
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel rejected the request.
    #[error("{op}: {}{}", io::Error::from_raw_os_error(*errno), ext_msg(.msg))]
    Kernel {
        op: String,
        /// Positive errno.
        errno: i32,
        /// The kernel's extended ack message, when it gave one.
        msg: Option<String>,
    },
    /// The socket itself failed.
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: io::Error,
    },
    /// The kernel's answer could not be parsed, or was not what the request implies.
    #[error("{op}: {detail}")]
    Protocol { op: String, detail: String },
}

fn ext_msg(msg: &Option<String>) -> String {
    match msg {
        Some(m) => format!(" ({m})"),
        None => String::new(),
    }
}

impl NetlinkError {
    /// The errno of a kernel rejection.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// The object already exists (`EEXIST`).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// The object (link, address, route) is not there.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV) | Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::EADDRNOTAVAIL)
        )
    }
}

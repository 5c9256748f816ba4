//! A blocking rtnetlink socket: send one request, collect its replies up to the ack,
//! the error or the end of the dump.

use std::cell::Cell;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::ns::Netns;
use super::NetlinkError;

/// Big enough for any datagram the kernel sends: dump skbs are capped at 32 KiB.
const RECV_BUF: usize = 64 * 1024;
/// `NLMSGERR_ATTR_MSG`: the extended ack's human-readable message.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Length of `struct nlmsghdr`, echoed (capped) at the start of an error payload.
const NLMSG_HDRLEN: usize = 16;

/// An rtnetlink socket bound to one network namespace (the one it was created in).
/// Not `Sync`: one request at a time.
pub struct Handle {
    socket: Socket,
    seq: Cell<u32>,
}

impl Handle {
    /// A socket in the calling thread's network namespace.
    pub fn new() -> Result<Handle, NetlinkError> {
        let io = |op: &str, source| NetlinkError::Io {
            op: op.to_string(),
            source,
        };
        let mut socket =
            Socket::new(NETLINK_ROUTE).map_err(|e| io("opening rtnetlink socket", e))?;
        socket
            .bind_auto()
            .map_err(|e| io("binding rtnetlink socket", e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| io("connecting rtnetlink socket", e))?;
        // Extended acks give the kernel's reason in errors; capped acks keep them small;
        // strict checking makes dumps honour the filters in the request header.
        socket
            .set_ext_ack(true)
            .map_err(|e| io("enabling extended acks", e))?;
        socket
            .set_cap_ack(true)
            .map_err(|e| io("enabling capped acks", e))?;
        socket
            .set_netlink_get_strict_chk(true)
            .map_err(|e| io("enabling strict dump checking", e))?;
        Ok(Handle {
            socket,
            seq: Cell::new(1),
        })
    }

    /// A socket inside `ns`: created on a thread that has joined `ns`, then usable from
    /// any thread of this process while the calling thread stays where it is.
    pub fn open_in(ns: &Netns) -> Result<Handle, NetlinkError> {
        ns.run(Handle::new).map_err(|e| NetlinkError::Io {
            op: format!("opening rtnetlink socket in {}", ns.path().display()),
            source: std::io::Error::other(e.to_string()),
        })?
    }

    /// Sends a request that the kernel acks; returns the replies before the ack
    /// (e.g. the link of a `GETLINK` by name).
    pub(crate) fn request(
        &self,
        op: impl FnOnce() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.exchange(op, msg, NLM_F_REQUEST | NLM_F_ACK | flags, false)
    }

    /// Sends a dump request; returns every message of the dump.
    pub(crate) fn dump(
        &self,
        op: impl FnOnce() -> String,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.exchange(op, msg, NLM_F_REQUEST | NLM_F_DUMP, true)
    }

    fn exchange(
        &self,
        op: impl FnOnce() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
        dump: bool,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        req.header.sequence_number = seq;
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        if let Err(source) = self.socket.send(&buf, 0) {
            return Err(NetlinkError::Io { op: op(), source });
        }

        let mut replies = Vec::new();
        let mut rbuf: Vec<u8> = Vec::with_capacity(RECV_BUF);
        loop {
            rbuf.clear();
            let n = match self.socket.recv(&mut rbuf, 0) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(NetlinkError::Io { op: op(), source }),
            };
            let data = &rbuf[..n.min(rbuf.len())];
            let mut off = 0;
            while off + NLMSG_HDRLEN <= data.len() {
                let len = match NetlinkBuffer::new_checked(&data[off..]) {
                    Ok(b) => b.length() as usize,
                    Err(e) => {
                        return Err(NetlinkError::Protocol {
                            op: op(),
                            detail: format!("bad netlink header in reply: {e}"),
                        })
                    }
                };
                let this = &data[off..off + len];
                off += (len + 3) & !3;
                let parsed = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(this) {
                    Ok(m) => m,
                    Err(e) => {
                        return Err(NetlinkError::Protocol {
                            op: op(),
                            detail: format!("undecodable reply: {e}"),
                        })
                    }
                };
                if parsed.header.sequence_number != seq {
                    // A late answer to an earlier request that gave up early; not ours.
                    continue;
                }
                match parsed.payload {
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    NetlinkPayload::Done(_) if dump => return Ok(replies),
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(replies),
                        Some(code) => {
                            return Err(NetlinkError::Kernel {
                                op: op(),
                                errno: -code.get(),
                                msg: ext_ack_message(&e.header),
                            })
                        }
                    },
                    NetlinkPayload::Overrun(_) => {
                        return Err(NetlinkError::Protocol {
                            op: op(),
                            detail: "netlink overrun".into(),
                        })
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The `NLMSGERR_ATTR_MSG` of an extended ack. `payload` is what follows the error code:
/// the (capped) request header, then the ack TLVs.
fn ext_ack_message(payload: &[u8]) -> Option<String> {
    let mut tlvs = payload.get(NLMSG_HDRLEN..)?;
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let s = &tlvs[4..len];
            let s = s.split(|b| *b == 0).next().unwrap_or(s);
            return Some(String::from_utf8_lossy(s).into_owned());
        }
        tlvs = &tlvs[((len + 3) & !3).min(tlvs.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_ack_message_is_found_after_the_echoed_header() {
        let mut p = vec![0u8; NLMSG_HDRLEN];
        // an unrelated TLV (offset attribute, type 2, u32)
        p.extend_from_slice(&8u16.to_ne_bytes());
        p.extend_from_slice(&2u16.to_ne_bytes());
        p.extend_from_slice(&7u32.to_ne_bytes());
        let msg = b"Device busy\0";
        p.extend_from_slice(&((4 + msg.len()) as u16).to_ne_bytes());
        p.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        p.extend_from_slice(msg);
        assert_eq!(ext_ack_message(&p).as_deref(), Some("Device busy"));
        assert_eq!(ext_ack_message(&p[..NLMSG_HDRLEN]), None);
        assert_eq!(ext_ack_message(&[1, 2]), None);
    }
}

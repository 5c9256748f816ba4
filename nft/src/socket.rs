//! The netlink socket: sends a `Batch` in one `sendmsg` and matches ACKs and
//! errors to messages by sequence number; runs dump requests.
//!
//! A socket talks to the network namespace it was created in; create it on a
//! thread that has entered the target namespace.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkBuffer, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP,
    NLM_F_MULTIPART, NLM_F_REQUEST,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::attr::{find, parse_attrs};
use crate::batch::{put_msg, Batch};
use crate::error::{errno_name, Error, Result};
use crate::sys;

/// How long to wait for the kernel's answer before giving up; commits of
/// very large transactions take well under a second.
const RECV_TIMEOUT: Duration = Duration::from_secs(30);
/// Receive buffer accounting charges roughly this much per queued ACK skb.
const ACK_TRUESIZE: usize = 1024;

/// What one `apply_timed` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// nf_tables messages in the transaction (without BEGIN/END).
    pub messages: usize,
    /// Size of the single datagram sent.
    pub bytes: usize,
    /// Time to serialize the batch into the datagram.
    pub encode: Duration,
    /// From `sendmsg` to the last ACK: the kernel's validation and commit.
    pub kernel: Duration,
}

/// An nf_tables netlink socket bound to the current network namespace.
pub struct Nft {
    sock: Socket,
    port: u32,
    seq: u32,
    rcvbuf: usize,
    sndbuf: usize,
    buf: Vec<u8>,
}

/// One reply message: type, flags, seq and payload after the nlmsghdr.
struct Reply {
    ty: u16,
    flags: u16,
    seq: u32,
    payload: Vec<u8>,
}

fn io_err(op: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { op, source }
}

fn nix_err(op: &'static str) -> impl FnOnce(nix::errno::Errno) -> Error {
    move |e| Error::Io {
        op,
        source: std::io::Error::from_raw_os_error(e as i32),
    }
}

/// Parsed NLMSG_ERROR payload.
struct NlErr {
    code: i32,
    message: Option<String>,
}

fn parse_nlmsgerr(flags: u16, payload: &[u8]) -> Result<NlErr> {
    if payload.len() < 4 + 16 {
        return Err(Error::Decode(format!(
            "NLMSG_ERROR payload of {} bytes",
            payload.len()
        )));
    }
    let code = i32::from_ne_bytes(payload[0..4].try_into().expect("4 bytes"));
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        // With NLM_F_CAPPED only the original header is echoed, otherwise
        // the whole original message.
        let orig_len = if flags & NLM_F_CAPPED != 0 {
            16
        } else {
            u32::from_ne_bytes(payload[4..8].try_into().expect("4 bytes")) as usize
        };
        let tlv_at = (4 + orig_len + 3) & !3;
        if tlv_at <= payload.len() {
            if let Ok(attrs) = parse_attrs(&payload[tlv_at..]) {
                message = find(&attrs, sys::NLMSGERR_ATTR_MSG).map(|a| a.string());
            }
        }
    }
    Ok(NlErr { code, message })
}

impl Nft {
    /// Opens a NETLINK_NETFILTER socket in the current network namespace.
    pub fn new() -> Result<Nft> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(io_err("open socket"))?;
        let addr = sock.bind_auto().map_err(io_err("bind socket"))?;
        // Extended ACK gives human-readable reasons; CAP_ACK keeps error
        // replies small (no echo of the failed message).
        sock.set_ext_ack(true)
            .map_err(io_err("enable extended ack"))?;
        sock.set_cap_ack(true)
            .map_err(io_err("enable capped ack"))?;
        let tv = TimeVal::new(RECV_TIMEOUT.as_secs() as i64, 0);
        setsockopt(&sock.as_fd(), sockopt::ReceiveTimeout, &tv)
            .map_err(nix_err("set receive timeout"))?;
        let rcvbuf =
            getsockopt(&sock.as_fd(), sockopt::RcvBuf).map_err(nix_err("get SO_RCVBUF"))?;
        let sndbuf =
            getsockopt(&sock.as_fd(), sockopt::SndBuf).map_err(nix_err("get SO_SNDBUF"))?;
        // Seed sequence numbers from the clock so replies to a previous
        // process's socket with the same port can't be mistaken for ours.
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Nft {
            sock,
            port: addr.port_number(),
            seq,
            rcvbuf,
            sndbuf,
            buf: Vec::with_capacity(1 << 20),
        })
    }

    fn next_seqs(&mut self, n: u32) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(n);
        s
    }

    fn ensure_buffers(&mut self, send: usize, recv: usize) -> Result<()> {
        // The kernel rejects a datagram larger than SO_SNDBUF (minus a small
        // overhead) with EMSGSIZE; as root SO_SNDBUFFORCE lifts the sysctl
        // cap. The value set is doubled by the kernel.
        if send + 4096 > self.sndbuf {
            let want = send + 65536;
            setsockopt(&self.sock.as_fd(), sockopt::SndBufForce, &want)
                .map_err(nix_err("raise SO_SNDBUFFORCE for a large batch"))?;
            self.sndbuf = getsockopt(&self.sock.as_fd(), sockopt::SndBuf)
                .map_err(nix_err("get SO_SNDBUF"))?;
        }
        if recv > self.rcvbuf {
            setsockopt(&self.sock.as_fd(), sockopt::RcvBufForce, &recv)
                .map_err(nix_err("raise SO_RCVBUFFORCE for batch ACKs"))?;
            self.rcvbuf = getsockopt(&self.sock.as_fd(), sockopt::RcvBuf)
                .map_err(nix_err("get SO_RCVBUF"))?;
        }
        Ok(())
    }

    /// Receives one datagram and splits it into netlink messages.
    fn recv_msgs(&mut self, op: &'static str) -> Result<Vec<Reply>> {
        self.buf.clear();
        if self.buf.capacity() < (1 << 20) {
            self.buf.reserve(1 << 20);
        }
        let n = self.sock.recv(&mut self.buf, 0).map_err(io_err(op))?;
        let data = &self.buf[..n.min(self.buf.len())];
        let mut out = Vec::new();
        let mut at = 0;
        while at + 16 <= data.len() {
            let b = NetlinkBuffer::new_checked(&data[at..])
                .map_err(|e| Error::Decode(format!("{op}: bad netlink header: {e}")))?;
            let len = b.length() as usize;
            if len < 16 || at + len > data.len() {
                return Err(Error::Decode(format!("{op}: netlink message length {len}")));
            }
            out.push(Reply {
                ty: b.message_type(),
                flags: b.flags(),
                seq: b.sequence_number(),
                payload: data[at + 16..at + len].to_vec(),
            });
            at += (len + 3) & !3;
        }
        Ok(out)
    }

    /// Sends the transaction and waits for the kernel's verdict. On error
    /// nothing was applied; the error names the first failing message.
    pub fn apply(&mut self, batch: &Batch) -> Result<()> {
        self.apply_timed(batch).map(|_| ())
    }

    /// `apply`, also reporting sizes and where the time went.
    pub fn apply_timed(&mut self, batch: &Batch) -> Result<ApplyStats> {
        if batch.is_empty() {
            return Ok(ApplyStats::default());
        }
        let n = batch.len();
        let first = self.next_seqs(n as u32 + 2);
        let t0 = Instant::now();
        let enc = batch.encode(first, self.port);
        let encode = t0.elapsed();
        self.ensure_buffers(enc.buf.len(), (n + 16) * ACK_TRUESIZE)?;
        let t1 = Instant::now();
        let sent = self
            .sock
            .send_to(&enc.buf, &SocketAddr::new(0, 0), 0)
            .map_err(io_err("send batch"))?;
        if sent != enc.buf.len() {
            return Err(Error::Invalid(format!(
                "short netlink send: {sent} of {} bytes",
                enc.buf.len()
            )));
        }
        let end_seq = first.wrapping_add(n as u32 + 1);
        let mut acked = vec![false; n];
        let mut remaining = n;
        let mut first_err: Option<(usize, NlErr)> = None;
        while remaining > 0 {
            for r in self.recv_msgs("receive batch acks")? {
                if r.ty != NLMSG_ERROR {
                    continue;
                }
                let e = parse_nlmsgerr(r.flags, &r.payload)?;
                if r.seq == first || r.seq == end_seq {
                    // Batch-level failure (e.g. EPERM, or commit failed):
                    // there may be no per-message replies.
                    if e.code != 0 {
                        return Err(Error::Kernel {
                            index: 0,
                            what: format!("commit of {n}-message transaction"),
                            errno: -e.code,
                            errno_name: errno_name(-e.code),
                            message: e.message,
                        });
                    }
                    continue;
                }
                let idx = r.seq.wrapping_sub(first).wrapping_sub(1) as usize;
                if idx >= n || acked[idx] {
                    continue; // stale reply from an earlier request
                }
                acked[idx] = true;
                remaining -= 1;
                if e.code != 0 && first_err.as_ref().is_none_or(|(i, _)| idx < *i) {
                    first_err = Some((idx, e));
                }
            }
        }
        match first_err {
            None => Ok(ApplyStats {
                messages: n,
                bytes: enc.buf.len(),
                encode,
                kernel: t1.elapsed(),
            }),
            Some((idx, e)) => Err(Error::Kernel {
                index: idx,
                what: batch.describe(idx).unwrap_or("?").to_string(),
                errno: -e.code,
                errno_name: errno_name(-e.code),
                message: e.message,
            }),
        }
    }

    /// Runs a dump request and returns the payloads (after nlmsghdr) of all
    /// reply messages.
    pub(crate) fn dump(
        &mut self,
        ty: u16,
        family: Option<crate::Family>,
        attrs: &[u8],
        what: &str,
    ) -> Result<Vec<Vec<u8>>> {
        let seq = self.next_seqs(1);
        let mut buf = Vec::with_capacity(64 + attrs.len());
        put_msg(
            &mut buf,
            (sys::NFNL_SUBSYS_NFTABLES << 8) | ty,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            self.port,
            [family.map_or(0, |f| f.nfproto()), sys::NFNETLINK_V0, 0, 0],
            attrs,
        );
        self.sock
            .send_to(&buf, &SocketAddr::new(0, 0), 0)
            .map_err(io_err("send dump request"))?;
        let mut out = Vec::new();
        loop {
            for r in self.recv_msgs("receive dump")? {
                if r.seq != seq {
                    continue;
                }
                match r.ty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let e = parse_nlmsgerr(r.flags, &r.payload)?;
                        if e.code == 0 {
                            return Ok(out);
                        }
                        return Err(Error::Dump {
                            what: what.to_string(),
                            errno: -e.code,
                            errno_name: errno_name(-e.code),
                        });
                    }
                    _ => {
                        out.push(r.payload);
                        if r.flags & NLM_F_MULTIPART == 0 {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::AttrWriter;

    #[test]
    fn nlmsgerr_with_extended_ack_message() {
        let mut p = Vec::new();
        p.extend_from_slice(&(-22i32).to_ne_bytes());
        p.extend_from_slice(&[0u8; 16]); // echoed header (capped)
        let mut w = AttrWriter::default();
        w.put_str(sys::NLMSGERR_ATTR_MSG, "bad things");
        p.extend_from_slice(&w.buf);
        let e = parse_nlmsgerr(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p).unwrap();
        assert_eq!(e.code, -22);
        assert_eq!(e.message.as_deref(), Some("bad things"));
        let plain = parse_nlmsgerr(NLM_F_CAPPED, &p).unwrap();
        assert_eq!(plain.message, None);
        assert!(parse_nlmsgerr(0, &p[..8]).is_err());
    }
}

//! Batched UDP I/O: `recvmmsg` (wait for one packet, take whatever else is
//! queued) and `sendmmsg`, so a busy worker pays two system calls per batch
//! instead of two per query.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Largest query kept; longer datagrams are cut (and then fail to parse).
pub const SLOT: usize = 4096;

/// Receive buffers and peer addresses for up to `n` datagrams.
pub struct Batch {
    bufs: Vec<[u8; SLOT]>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<usize>,
    count: usize,
}

impl Batch {
    pub fn new(n: usize) -> Batch {
        Batch {
            bufs: vec![[0u8; SLOT]; n],
            // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
            addrs: vec![unsafe { zeroed() }; n],
            lens: vec![0; n],
            count: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Blocks (up to the socket's receive timeout) for at least one datagram.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let n = self.bufs.len();
        let mut iovs: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: SLOT,
            })
            .collect();
        // SAFETY: mmsghdr is plain data; zero is a valid initial value.
        let mut hdrs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { zeroed() }).collect();
        for (i, h) in hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut iovs[i];
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a live buffer/address of this batch
        // (iovs and hdrs outlive the call); n matches the arrays.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        self.count = r as usize;
        for (i, h) in hdrs.iter().take(self.count).enumerate() {
            self.lens[i] = (h.msg_len as usize).min(SLOT);
        }
        Ok(self.count)
    }

    pub fn packet(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.lens[i]]
    }

    pub fn raw_addr(&self, i: usize) -> &libc::sockaddr_storage {
        &self.addrs[i]
    }

    pub fn peer(&self, i: usize) -> Option<SocketAddr> {
        to_socket_addr(&self.addrs[i])
    }
}

fn to_socket_addr(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match a.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let v4: &libc::sockaddr_in = unsafe { &*(a as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let v6: &libc::sockaddr_in6 = unsafe { &*(a as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(v6.sin6_addr.s6_addr),
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Sends each (payload, destination) in as few `sendmmsg` calls as the
/// kernel allows. Returns how many were sent.
pub fn send_all(fd: RawFd, msgs: &[(&[u8], &libc::sockaddr_storage)]) -> io::Result<usize> {
    if msgs.is_empty() {
        return Ok(0);
    }
    let mut iovs: Vec<libc::iovec> = msgs
        .iter()
        .map(|(p, _)| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; zero is a valid initial value.
    let mut hdrs: Vec<libc::mmsghdr> = (0..msgs.len()).map(|_| unsafe { zeroed() }).collect();
    for (i, h) in hdrs.iter_mut().enumerate() {
        let addr = msgs[i].1;
        h.msg_hdr.msg_name =
            (addr as *const libc::sockaddr_storage as *mut libc::sockaddr_storage).cast();
        h.msg_hdr.msg_namelen = match addr.ss_family as i32 {
            libc::AF_INET => size_of::<libc::sockaddr_in>(),
            _ => size_of::<libc::sockaddr_in6>(),
        } as libc::socklen_t;
        h.msg_hdr.msg_iov = &mut iovs[i];
        h.msg_hdr.msg_iovlen = 1;
    }
    let mut sent = 0;
    while sent < hdrs.len() {
        // SAFETY: headers point at payloads and addresses borrowed for this call.
        let r = unsafe {
            libc::sendmmsg(
                fd,
                hdrs[sent..].as_mut_ptr(),
                (hdrs.len() - sent) as libc::c_uint,
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if sent == 0 {
                return Err(e);
            }
            break;
        }
        if r == 0 {
            break;
        }
        sent += r as usize;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn batches_round_trip_on_loopback() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        for i in 0..5u8 {
            client
                .send_to(&[i; 3], server.local_addr().unwrap())
                .unwrap();
        }
        let mut b = Batch::new(8);
        let mut got = 0;
        while got < 5 {
            got += b.recv(server.as_raw_fd()).unwrap();
        }
        assert_eq!(b.peer(0), Some(client.local_addr().unwrap()));
        let replies: Vec<(&[u8], &libc::sockaddr_storage)> =
            (0..b.len()).map(|i| (b.packet(i), b.raw_addr(i))).collect();
        assert_eq!(send_all(server.as_raw_fd(), &replies).unwrap(), b.len());
        let mut buf = [0u8; 16];
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(n, 3);
    }
}

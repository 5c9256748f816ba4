//! One query in, one response (or a forwarding decision) out: the pure part
//! of the request path, shared by the UDP and TCP loops and the fuzz target.

use crate::index::{Index, Lookup};
use crate::wire::{self, Query, Rcode, Reject, Sections, CLASS_ANY, CLASS_IN};

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `out` holds the response; the rcode is for metrics.
    Reply(Rcode),
    /// Send nothing (not a query, or shorter than a header).
    Drop,
    /// A name outside the cluster zone from a client allowed to recurse.
    Forward,
}

/// Answers `q` from `index` into `out`. `recursion` says whether this client
/// may use forwarding (it also sets RA); `limit` is the response size limit.
pub fn answer_query(
    index: &Index,
    q: &Query<'_>,
    recursion: bool,
    limit: usize,
    out: &mut Vec<u8>,
) -> Outcome {
    if q.qclass != CLASS_IN && q.qclass != CLASS_ANY {
        wire::write_error(out, q, Rcode::Refused, recursion);
        return Outcome::Reply(Rcode::Refused);
    }
    let lookup = index.lookup(&q.qname, q.qtype);
    let soa = [&index.soa];
    let (rcode, sections) = match &lookup {
        Lookup::Answer { answer, additional } => (
            Rcode::NoError,
            Sections {
                rcode: None,
                authoritative: true,
                answer: answer.iter().map(|c| &**c).collect(),
                authority: Vec::new(),
                additional: additional.iter().map(|c| &**c).collect(),
            },
        ),
        Lookup::NoData | Lookup::NxDomain => {
            let rcode = if lookup == Lookup::NoData {
                Rcode::NoError
            } else {
                Rcode::NxDomain
            };
            (
                rcode,
                Sections {
                    rcode: Some(rcode),
                    authoritative: true,
                    authority: soa.to_vec(),
                    ..Default::default()
                },
            )
        }
        Lookup::NotSynced => (
            Rcode::ServFail,
            Sections {
                rcode: Some(Rcode::ServFail),
                ..Default::default()
            },
        ),
        Lookup::Refused => (
            Rcode::Refused,
            Sections {
                rcode: Some(Rcode::Refused),
                ..Default::default()
            },
        ),
        Lookup::Outside => {
            if recursion {
                return Outcome::Forward;
            }
            (
                Rcode::Refused,
                Sections {
                    rcode: Some(Rcode::Refused),
                    ..Default::default()
                },
            )
        }
    };
    wire::write_response(out, q, &sections, recursion, limit);
    Outcome::Reply(rcode)
}

/// Parses `packet` and answers it; on `Forward` the caller forwards the
/// parsed query (parse again; it is cheap and keeps borrows simple).
pub fn handle_packet(
    index: &Index,
    packet: &[u8],
    recursion: impl Fn() -> bool,
    udp: bool,
    out: &mut Vec<u8>,
) -> Outcome {
    match wire::parse_query(packet) {
        Ok(q) => {
            let limit = if udp { q.udp_limit() } else { 65535 };
            answer_query(index, &q, recursion(), limit, out)
        }
        Err(Reject::Drop) => Outcome::Drop,
        Err(rej) => {
            wire::write_reject(out, packet, &rej);
            match rej {
                Reject::Reply { rcode, .. } => Outcome::Reply(rcode),
                Reject::Drop => Outcome::Drop,
            }
        }
    }
}

//! One query in, one response (or a forwarding decision) out: the pure part
//! of the request path, shared by the UDP and TCP loops and the fuzz target.

use std::borrow::Cow;

use crate::index::{Index, Lookup};
use crate::wire::{self, LowerName, Query, Rcode, Reject, RrList, Sections, CLASS_ANY, CLASS_IN};

/// What to do with a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `out` holds the response; the rcode is for metrics.
    Reply(Rcode),
    /// Send nothing (not a query, or shorter than a header).
    Drop,
    /// A name outside the cluster zone from a client allowed to recurse.
    Forward,
    /// An ExternalName chain leaving the zone for this name (lowercase):
    /// `out` holds the NOERROR reply with the CNAMEs alone; a caller that
    /// can forward looks the name up with the question's type and answers
    /// with `answer_with_target` instead.
    Chase(Box<LowerName>),
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
    if let Lookup::Chase { answer, target } = &lookup {
        write_chain(out, q, answer, None, recursion, limit);
        return match LowerName::from_wire(target) {
            Some(t) => Outcome::Chase(Box::new(t)),
            None => Outcome::Reply(Rcode::NoError),
        };
    }
    let soa = [&index.soa];
    let (rcode, sections) = match &lookup {
        Lookup::Chase { .. } => unreachable!("answered above"),
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

/// The authoritative NOERROR answer of an ExternalName chain: its CNAMEs,
/// then the records the target's lookup gave (CoreDNS copies the answer
/// section of its own upstream lookup, whatever its rcode).
fn write_chain(
    out: &mut Vec<u8>,
    q: &Query<'_>,
    chain: &[Cow<'_, RrList>],
    target_records: Option<&RrList>,
    recursion: bool,
    limit: usize,
) {
    let mut answer: Vec<&RrList> = chain.iter().map(|c| &**c).collect();
    answer.extend(target_records);
    let sections = Sections {
        rcode: None,
        authoritative: true,
        answer,
        ..Default::default()
    };
    wire::write_response(out, q, &sections, recursion, limit);
}

/// Answers `q` after an `Outcome::Chase`, with `target_response` (the
/// response to the target's lookup, e.g. from the forwarder) completing the
/// chain. Looks `q` up again in `index`: what it answers now (after an
/// index update, perhaps no chain any more) is what is sent.
pub fn answer_with_target(
    index: &Index,
    q: &Query<'_>,
    recursion: bool,
    limit: usize,
    target_response: &[u8],
    out: &mut Vec<u8>,
) -> Rcode {
    if let Lookup::Chase { answer, target } = index.lookup(&q.qname, q.qtype) {
        match wire::answer_records(target_response, target, q.qtype) {
            Ok(records) => write_chain(out, q, &answer, Some(&records), recursion, limit),
            Err(_) => write_chain(out, q, &answer, None, recursion, limit),
        }
        return Rcode::NoError;
    }
    match answer_query(index, q, recursion, limit, out) {
        Outcome::Reply(rc) => rc,
        // Not reached for a name that was a chain (inside the zone, which
        // an index update does not move), but never leave `out` unwritten.
        Outcome::Forward | Outcome::Drop => {
            wire::write_error(out, q, Rcode::ServFail, recursion);
            Rcode::ServFail
        }
        Outcome::Chase(_) => Rcode::NoError,
    }
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

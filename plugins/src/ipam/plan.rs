//! Deciding which address each range set contributes to an ADD: the container's
//! existing reservation (idempotent retry), a requested address, or the next free one.
//! Pure: the store is seen through [`View`].

use std::net::IpAddr;

use super::alloc::{Next, RangeSet};
use crate::cni::CniError;

/// Code for allocation failures (exhausted set, requested address taken): the
/// reference host-local reports these as 999, so runtimes and operators see the same.
pub const ALLOCATION_FAILED: u32 = 999;

/// What the planner needs from the store.
pub trait View {
    fn is_taken(&mut self, ip: IpAddr) -> Result<bool, CniError>;
    fn reserved_in(&mut self, set: &RangeSet) -> Result<u64, CniError>;
    fn last_reserved(&self, set: &RangeSet) -> Option<IpAddr>;
    fn recount(&mut self) -> Result<(), CniError>;
}

/// One set's address for this ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Index into the config's range sets.
    pub set: usize,
    pub ip: IpAddr,
    /// Must be reserved (false: the container already holds it).
    pub new: bool,
}

/// Plans one address per set. Fails before anything is written if any set cannot
/// contribute, so a failed dual-stack ADD leaves nothing behind.
pub fn plan(
    sets: &[RangeSet],
    requested: &[IpAddr],
    existing: &[IpAddr],
    view: &mut impl View,
) -> Result<Vec<Choice>, CniError> {
    // Assign each requested address to its set (host-local rules: it must fall in a
    // set, not be the gateway, and a set takes at most one).
    let mut wanted: Vec<Option<IpAddr>> = vec![None; sets.len()];
    for ip in requested {
        let Some(i) = sets
            .iter()
            .position(|s| s.0.iter().any(|r| r.contains(*ip)))
        else {
            return Err(CniError::invalid_config(format!(
                "requested IP {ip} is not in any range of the network"
            )));
        };
        if !sets[i].is_allocatable(*ip) {
            return Err(CniError::invalid_config(format!(
                "requested IP {ip} is the gateway, network or broadcast address of range set {}",
                sets[i]
            )));
        }
        if let Some(other) = wanted[i] {
            return Err(CniError::invalid_config(format!(
                "requested IPs {other} and {ip} both fall in range set {}; one address per set",
                sets[i]
            )));
        }
        wanted[i] = Some(*ip);
    }
    let mut out: Vec<Choice> = Vec::with_capacity(sets.len());
    for (i, set) in sets.iter().enumerate() {
        let held = existing.iter().copied().find(|ip| set.is_allocatable(*ip));
        let choice = match (wanted[i], held) {
            (Some(w), Some(h)) if w == h => Choice {
                set: i,
                ip: h,
                new: false,
            },
            (Some(w), Some(h)) => {
                return Err(CniError::invalid_config(format!(
                    "container already holds {h} in range set {set}; requested {w} (DEL first)"
                )))
            }
            (None, Some(h)) => Choice {
                set: i,
                ip: h,
                new: false,
            },
            (Some(w), None) => {
                if view.is_taken(w)? {
                    return Err(CniError::new(
                        ALLOCATION_FAILED,
                        format!("requested IP address {w} is not available in range set {set}"),
                        "",
                    ));
                }
                Choice {
                    set: i,
                    ip: w,
                    new: true,
                }
            }
            (None, None) => Choice {
                set: i,
                ip: next_free(set, &out, view)?,
                new: true,
            },
        };
        out.push(choice);
    }
    Ok(out)
}

fn next_free(set: &RangeSet, chosen: &[Choice], view: &mut impl View) -> Result<IpAddr, CniError> {
    for attempt in 0..2 {
        let reserved = view.reserved_in(set)?;
        let last = view.last_reserved(set);
        let mut err = None;
        let next = set.next_free(last, u128::from(reserved), |ip| {
            if chosen.iter().any(|c| c.ip == ip) {
                return true;
            }
            view.is_taken(ip).unwrap_or_else(|e| {
                err = Some(e);
                true
            })
        });
        if let Some(e) = err {
            return Err(e);
        }
        match next {
            Next::Found(ip) => return Ok(ip),
            Next::Exhausted => break,
            Next::CountStale if attempt == 0 => view.recount()?,
            Next::CountStale => break,
        }
    }
    Err(CniError::new(
        ALLOCATION_FAILED,
        format!("no IP addresses available in range set: {set}"),
        "",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::alloc::Range;
    use std::collections::HashSet;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn set(subnet: &str, start: &str, end: &str, gw: &str) -> RangeSet {
        RangeSet(vec![Range {
            subnet: subnet.parse().expect("subnet"),
            start: ip(start),
            end: ip(end),
            gateway: ip(gw),
        }])
    }

    #[derive(Default)]
    struct Mem {
        taken: HashSet<IpAddr>,
        /// Pretend count (None: exact).
        count: Option<u64>,
        last: Option<IpAddr>,
        recounts: u32,
    }

    impl View for Mem {
        fn is_taken(&mut self, ip: IpAddr) -> Result<bool, CniError> {
            Ok(self.taken.contains(&ip))
        }
        fn reserved_in(&mut self, set: &RangeSet) -> Result<u64, CniError> {
            Ok(self.count.unwrap_or_else(|| {
                self.taken
                    .iter()
                    .filter(|i| set.is_allocatable(**i))
                    .count() as u64
            }))
        }
        fn last_reserved(&self, _: &RangeSet) -> Option<IpAddr> {
            self.last
        }
        fn recount(&mut self) -> Result<(), CniError> {
            self.recounts += 1;
            self.count = None;
            Ok(())
        }
    }

    fn dual() -> Vec<RangeSet> {
        vec![
            set("10.1.0.0/29", "10.1.0.1", "10.1.0.6", "10.1.0.1"),
            set("fd00::/120", "fd00::1", "fd00::ff", "fd00::1"),
        ]
    }

    #[test]
    fn one_per_set_round_robin() {
        let mut m = Mem {
            last: Some(ip("10.1.0.3")),
            ..Default::default()
        };
        let p = plan(&dual(), &[], &[], &mut m).expect("plan");
        assert_eq!(
            p,
            vec![
                Choice {
                    set: 0,
                    ip: ip("10.1.0.4"),
                    new: true
                },
                Choice {
                    set: 1,
                    ip: ip("fd00::2"),
                    new: true
                }
            ]
        );
    }

    #[test]
    fn existing_is_reused() {
        let mut m = Mem::default();
        m.taken.insert(ip("10.1.0.5"));
        let p = plan(&dual(), &[], &[ip("10.1.0.5")], &mut m).expect("plan");
        assert_eq!(
            p[0],
            Choice {
                set: 0,
                ip: ip("10.1.0.5"),
                new: false
            }
        );
        assert!(p[1].new);
    }

    #[test]
    fn requested_rules() {
        let mut m = Mem::default();
        let p = plan(&dual(), &[ip("fd00::9"), ip("10.1.0.6")], &[], &mut m).expect("plan");
        assert_eq!((p[0].ip, p[1].ip), (ip("10.1.0.6"), ip("fd00::9")));
        for (req, code) in [
            (vec![ip("10.9.0.2")], 7),
            (vec![ip("10.1.0.1")], 7),
            (vec![ip("10.1.0.7")], 7),
            (vec![ip("10.1.0.2"), ip("10.1.0.3")], 7),
        ] {
            assert_eq!(
                plan(&dual(), &req, &[], &mut m).expect_err("bad").code,
                code,
                "{req:?}"
            );
        }
        m.taken.insert(ip("10.1.0.2"));
        assert_eq!(
            plan(&dual(), &[ip("10.1.0.2")], &[], &mut m)
                .expect_err("taken")
                .code,
            ALLOCATION_FAILED
        );
        // Requested equal to what the container holds: fine; different: conflict.
        assert!(!plan(&dual(), &[ip("10.1.0.2")], &[ip("10.1.0.2")], &mut m).expect("same")[0].new);
        assert_eq!(
            plan(&dual(), &[ip("10.1.0.3")], &[ip("10.1.0.2")], &mut m)
                .expect_err("conflict")
                .code,
            7
        );
    }

    #[test]
    fn exhausted_and_stale_count() {
        let mut m = Mem::default();
        for i in 2..=6 {
            m.taken.insert(ip(&format!("10.1.0.{i}")));
        }
        let e = plan(&dual(), &[], &[], &mut m).expect_err("full");
        assert_eq!(e.code, ALLOCATION_FAILED);
        assert!(e.msg.contains("10.1.0.1-10.1.0.6"), "{e}");
        // A stale low count triggers one recount, then the truth (full).
        m.count = Some(1);
        assert_eq!(
            plan(&dual(), &[], &[], &mut m).expect_err("full").code,
            ALLOCATION_FAILED
        );
        assert_eq!(m.recounts, 1);
        // Stale count but there is room: found after recount.
        m.taken.remove(&ip("10.1.0.6"));
        m.count = Some(0);
        assert_eq!(
            plan(&dual(), &[], &[], &mut m).expect("room")[0].ip,
            ip("10.1.0.6")
        );
    }
}

//! The dir store's change journal: an append-only text file, one record per
//! line, written only under the store's flock. It is both the revision
//! counter (the highest revision in it) and the index of what the store holds
//! (the last `P` of every live key), so every process rebuilds the same view
//! by reading it, and watchers replay it from any revision still in it.
//!
//! ```text
//! H <horizon> <current>                               after a compaction: history <= horizon is gone
//! P <rev> <kind> <namespace|-> <name> <hash> <ino> <size> <mtime_ns>
//! D <rev> <kind> <namespace|-> <name>
//! ```

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::store::{Kind, ObjectKey};

/// What identifies a file's content without reading it: if a file's stat
/// still matches, its content is the one journaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileStat {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl FileStat {
    pub fn of(meta: &std::fs::Metadata) -> FileStat {
        FileStat {
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Header {
        horizon: u64,
        current: u64,
    },
    Put {
        rev: u64,
        key: ObjectKey,
        hash: u64,
        stat: FileStat,
    },
    Delete {
        rev: u64,
        key: ObjectKey,
    },
}

impl Record {
    pub fn rev(&self) -> u64 {
        match self {
            Record::Header { current, .. } => *current,
            Record::Put { rev, .. } | Record::Delete { rev, .. } => *rev,
        }
    }

    pub fn to_line(&self) -> String {
        fn ns(k: &ObjectKey) -> &str {
            k.namespace.as_deref().unwrap_or("-")
        }
        match self {
            Record::Header { horizon, current } => format!("H {horizon} {current}\n"),
            Record::Put {
                rev,
                key,
                hash,
                stat,
            } => format!(
                "P {rev} {} {} {} {hash:016x} {} {} {}\n",
                key.kind.plural(),
                ns(key),
                key.name,
                stat.ino,
                stat.size,
                stat.mtime_ns
            ),
            Record::Delete { rev, key } => {
                format!("D {rev} {} {} {}\n", key.kind.plural(), ns(key), key.name)
            }
        }
    }

    pub fn parse(line: &str) -> Result<Record, String> {
        let f: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| -> Result<u64, String> {
            f.get(i)
                .ok_or_else(|| format!("field {i} missing"))?
                .parse::<u64>()
                .map_err(|e| format!("field {i}: {e}"))
        };
        let key = || -> Result<ObjectKey, String> {
            let kind = kind_from_plural(f.get(2).copied().unwrap_or(""))
                .ok_or_else(|| format!("unknown kind {:?}", f.get(2)))?;
            let ns = f.get(3).ok_or("namespace missing")?;
            let name = f.get(4).ok_or("name missing")?;
            let ns = if kind.namespaced() { Some(*ns) } else { None };
            Ok(ObjectKey::new(kind, ns, name))
        };
        match f.first().copied() {
            Some("H") if f.len() == 3 => Ok(Record::Header {
                horizon: num(1)?,
                current: num(2)?,
            }),
            Some("P") if f.len() == 9 => Ok(Record::Put {
                rev: num(1)?,
                key: key()?,
                hash: u64::from_str_radix(f[5], 16).map_err(|e| format!("hash: {e}"))?,
                stat: FileStat {
                    ino: num(6)?,
                    size: num(7)?,
                    mtime_ns: f[8].parse().map_err(|e| format!("mtime: {e}"))?,
                },
            }),
            Some("D") if f.len() == 5 => Ok(Record::Delete {
                rev: num(1)?,
                key: key()?,
            }),
            _ => Err("not a journal record".to_string()),
        }
    }
}

/// The revision of a `P` or `D` line, read without parsing the rest.
fn change_rev(line: &str) -> Option<u64> {
    let rest = line
        .strip_prefix("P ")
        .or_else(|| line.strip_prefix("D "))?;
    rest.split(' ').next()?.parse().ok()
}

pub fn kind_from_plural(s: &str) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| k.plural() == s)
}

/// FNV-1a: a content fingerprint that is the same in every process and
/// every build (std's hasher makes no such promise).
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Reads a journal incrementally. Compaction replaces the file (rename), which
/// the reader notices by the inode changing and answers by rereading it whole.
#[derive(Default)]
pub struct Reader {
    file: Option<File>,
    ino: u64,
    offset: u64,
    partial: Vec<u8>,
}

pub struct ReadOutcome {
    /// The file was replaced or opened for the first time: `records` is
    /// the whole journal, not a continuation.
    pub reset: bool,
    pub records: Vec<Record>,
    /// Lines that are not records (a writer that crashed mid-line).
    pub bad_lines: Vec<String>,
}

impl Reader {
    pub fn read_new(&mut self, path: &Path) -> io::Result<ReadOutcome> {
        self.read_new_after(path, 0)
    }

    /// `read_new` without the `P` and `D` records of revisions up to
    /// `seen`, which are skipped unparsed: a watcher starting at the end of
    /// a journal of tens of thousands of records needs none of them.
    pub fn read_new_after(&mut self, path: &Path, seen: u64) -> io::Result<ReadOutcome> {
        let ino = std::fs::metadata(path)?.ino();
        let mut reset = false;
        if self.file.is_none() || ino != self.ino {
            self.file = Some(File::open(path)?);
            self.ino = ino;
            self.offset = 0;
            self.partial.clear();
            reset = true;
        }
        let file = self.file.as_mut().expect("opened above");
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = std::mem::take(&mut self.partial);
        let start = buf.len();
        file.read_to_end(&mut buf)?;
        self.offset += (buf.len() - start) as u64;
        let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        self.partial = buf.split_off(complete);
        let mut records = Vec::new();
        let mut bad_lines = Vec::new();
        for line in String::from_utf8_lossy(&buf).lines() {
            if line.is_empty() || change_rev(line).is_some_and(|r| r <= seen) {
                continue;
            }
            match Record::parse(line) {
                Ok(r) => records.push(r),
                Err(_) => bad_lines.push(line.to_string()),
            }
        }
        Ok(ReadOutcome {
            reset,
            records,
            bad_lines,
        })
    }

    /// Whether the last line read so far is incomplete (a writer crashed mid-line).
    pub fn has_partial_line(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Forget the unfinished line: the next append starts a fresh line.
    pub fn drop_partial_line(&mut self) {
        self.partial.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let recs = [
            Record::Header {
                horizon: 10,
                current: 42,
            },
            Record::Put {
                rev: 43,
                key: ObjectKey::new(Kind::Service, Some("kube-system"), "kube-dns"),
                hash: 0xdead_beef,
                stat: FileStat {
                    ino: 7,
                    size: 99,
                    mtime_ns: 1_700_000_000_123_456_789,
                },
            },
            Record::Delete {
                rev: 44,
                key: ObjectKey::new(Kind::Node, None, "node-1"),
            },
        ];
        for r in recs {
            let line = r.to_line();
            assert!(line.ends_with('\n'));
            assert_eq!(Record::parse(line.trim_end()).unwrap(), r);
        }
    }

    #[test]
    fn garbage_is_rejected() {
        for l in [
            "",
            "P 1 services",
            "X 1 2",
            "P x services default a 00 1 2 3",
            "D 3 widgets - a",
        ] {
            assert!(Record::parse(l).is_err(), "{l:?}");
        }
    }

    #[test]
    fn reader_keeps_partial_lines_for_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let d1 = Record::Delete {
            rev: 1,
            key: ObjectKey::new(Kind::Node, None, "a"),
        };
        let d2 = Record::Delete {
            rev: 2,
            key: ObjectKey::new(Kind::Node, None, "b"),
        };
        let l2 = d2.to_line();
        std::fs::write(&path, format!("{}{}", d1.to_line(), &l2[..4])).unwrap();
        let mut r = Reader::default();
        let out = r.read_new(&path).unwrap();
        assert!(out.reset);
        assert_eq!(out.records, vec![d1.clone()]);
        assert!(r.has_partial_line());
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&l2.as_bytes()[4..]).unwrap();
        let out = r.read_new(&path).unwrap();
        assert!(!out.reset);
        assert_eq!(out.records, vec![d2]);
        // A replaced file (compaction) is read from the start.
        let tmp = dir.path().join("j.tmp");
        std::fs::write(&tmp, d1.to_line()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let out = r.read_new(&path).unwrap();
        assert!(out.reset);
        assert_eq!(out.records, vec![d1]);
    }

    #[test]
    fn reader_skips_records_already_seen_but_not_headers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let h = Record::Header {
            horizon: 0,
            current: 1,
        };
        let recs: Vec<Record> = (2..6)
            .map(|rev| Record::Delete {
                rev,
                key: ObjectKey::new(Kind::Node, None, &format!("n{rev}")),
            })
            .collect();
        let text: String = std::iter::once(&h)
            .chain(&recs)
            .map(Record::to_line)
            .collect();
        std::fs::write(&path, text).unwrap();
        let out = Reader::default().read_new_after(&path, 3).unwrap();
        assert_eq!(out.records, [h, recs[2].clone(), recs[3].clone()]);
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}

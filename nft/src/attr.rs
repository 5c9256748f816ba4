//! Netlink attribute (TLV) writing and reading.
//!
//! Writing is done into a flat `Vec<u8>` with nests patched up on close, which
//! is much cheaper for 30k-element batches than building a tree of `Nla`
//! values first. Reading uses `netlink-packet-core`'s `NlasIterator`.

use netlink_packet_core::{NlaBuffer, NlasIterator, NLA_F_NESTED, NLA_TYPE_MASK};

use crate::error::{Error, Result};

/// Round `len` up to the netlink attribute alignment (4 bytes).
pub(crate) const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Appends attributes to a message buffer.
#[derive(Debug, Default, Clone)]
pub(crate) struct AttrWriter {
    pub(crate) buf: Vec<u8>,
}

/// Position of an open nest (offset of its header in the buffer).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Nest(usize);

impl AttrWriter {
    pub(crate) fn with_capacity(cap: usize) -> Self {
        AttrWriter {
            buf: Vec::with_capacity(cap),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn put(&mut self, kind: u16, value: &[u8]) {
        let len = 4 + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    pub(crate) fn put_u32_be(&mut self, kind: u16, v: u32) {
        self.put(kind, &v.to_be_bytes());
    }

    pub(crate) fn put_u64_be(&mut self, kind: u16, v: u64) {
        self.put(kind, &v.to_be_bytes());
    }

    /// A NUL-terminated string, as the kernel's `NLA_STRING` policies expect.
    pub(crate) fn put_str(&mut self, kind: u16, s: &str) {
        let len = 4 + s.len() + 1;
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    pub(crate) fn nest(&mut self, kind: u16) -> Nest {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        Nest(at)
    }

    /// Closes a nest. Fails when the nest exceeds the 16-bit attribute length
    /// (callers split element lists before that happens).
    pub(crate) fn end(&mut self, nest: Nest) -> Result<()> {
        let len = self.buf.len() - nest.0;
        if len > u16::MAX as usize {
            return Err(Error::Invalid(format!(
                "netlink attribute nest of {len} bytes exceeds the 65535-byte limit"
            )));
        }
        self.buf[nest.0..nest.0 + 2].copy_from_slice(&(len as u16).to_ne_bytes());
        Ok(())
    }
}

/// One parsed attribute: kind without flag bits, and its value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attr<'a> {
    pub kind: u16,
    pub value: &'a [u8],
}

/// Iterates over the attributes in `buf`, failing on malformed input.
pub(crate) fn parse_attrs(buf: &[u8]) -> Result<Vec<Attr<'_>>> {
    let mut out = Vec::new();
    for nla in NlasIterator::new(buf) {
        let nla: NlaBuffer<&[u8]> =
            nla.map_err(|e| Error::Decode(format!("malformed netlink attribute: {e}")))?;
        let kind = nla.kind() & NLA_TYPE_MASK;
        out.push(Attr {
            kind,
            value: nla.into_inner_value(),
        });
    }
    Ok(out)
}

/// Helpers for reading attribute values.
pub(crate) trait NlaValue<'a> {
    fn into_inner_value(self) -> &'a [u8];
}

impl<'a> NlaValue<'a> for NlaBuffer<&'a [u8]> {
    fn into_inner_value(self) -> &'a [u8] {
        let len = self.value_length();
        let inner = self.into_inner();
        &inner[4..4 + len]
    }
}

impl<'a> Attr<'a> {
    pub(crate) fn u32_be(&self) -> Result<u32> {
        let b: [u8; 4] = self
            .value
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| {
                Error::Decode(format!(
                    "attribute {} is not a u32 ({} bytes)",
                    self.kind,
                    self.value.len()
                ))
            })?;
        Ok(u32::from_be_bytes(b))
    }

    pub(crate) fn u64_be(&self) -> Result<u64> {
        let b: [u8; 8] = self
            .value
            .get(..8)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| {
                Error::Decode(format!(
                    "attribute {} is not a u64 ({} bytes)",
                    self.kind,
                    self.value.len()
                ))
            })?;
        Ok(u64::from_be_bytes(b))
    }

    pub(crate) fn string(&self) -> String {
        let end = self
            .value
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.value.len());
        String::from_utf8_lossy(&self.value[..end]).into_owned()
    }

    pub(crate) fn nested(&self) -> Result<Vec<Attr<'a>>> {
        parse_attrs(self.value)
    }
}

/// Finds the first attribute of `kind`.
pub(crate) fn find<'a, 'b>(attrs: &'b [Attr<'a>], kind: u16) -> Option<&'b Attr<'a>> {
    attrs.iter().find(|a| a.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_aligned_attrs_and_nests() {
        let mut w = AttrWriter::default();
        w.put_str(1, "podnet");
        let n = w.nest(2);
        w.put_u32_be(1, 0x0a000001);
        w.end(n).unwrap();
        // "podnet\0" = 7 bytes + 4 header = 11, padded to 12.
        assert_eq!(&w.buf[0..4], &[11, 0, 1, 0]);
        assert_eq!(&w.buf[4..11], b"podnet\0");
        assert_eq!(w.buf[11], 0);
        assert_eq!(&w.buf[12..16], &[12, 0, 2, 0x80]);
        assert_eq!(&w.buf[16..20], &[8, 0, 1, 0]);
        assert_eq!(&w.buf[20..24], &[10, 0, 0, 1]);

        let attrs = parse_attrs(&w.buf).unwrap();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0].string(), "podnet");
        assert_eq!(attrs[1].kind, 2);
        let inner = attrs[1].nested().unwrap();
        assert_eq!(inner[0].u32_be().unwrap(), 0x0a000001);
    }

    #[test]
    fn oversized_nest_is_an_error() {
        let mut w = AttrWriter::default();
        let n = w.nest(3);
        w.put(1, &vec![0u8; 70_000 - 8]);
        assert!(w.end(n).is_err());
    }
}

//! libnftnl "udata" TLVs (1-byte type, 1-byte length, value) stored in the
//! USERDATA attributes of tables, rules, sets and elements. `nft list` reads
//! them: comments, and for sets the key/data byte order it needs to print
//! values (e.g. host-order integers) correctly.

use crate::sys;

/// Builds a udata blob.
#[derive(Debug, Default, Clone)]
pub(crate) struct Udata(pub(crate) Vec<u8>);

impl Udata {
    pub(crate) fn put(&mut self, kind: u8, value: &[u8]) {
        // The length byte limits values to 255 bytes; comments are truncated
        // by callers (nft's own limit is NFT_USERDATA_MAXLEN-derived too).
        let len = value.len().min(255);
        self.0.push(kind);
        self.0.push(len as u8);
        self.0.extend_from_slice(&value[..len]);
    }

    /// u32 in host byte order, as `nftnl_udata_put_u32` writes it.
    pub(crate) fn put_u32(&mut self, kind: u8, v: u32) {
        self.put(kind, &v.to_ne_bytes());
    }

    /// NUL-terminated string, as `nftnl_udata_put_strz` writes it; at most
    /// 254 bytes of text so the terminator fits.
    pub(crate) fn put_strz(&mut self, kind: u8, s: &str) {
        let mut end = s.len().min(254);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut v = s.as_bytes()[..end].to_vec();
        v.push(0);
        self.put(kind, &v);
    }
}

/// Parses a udata blob into (type, value) pairs; stops at a truncated TLV.
pub(crate) fn parse(buf: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 <= buf.len() {
        let kind = buf[i];
        let len = buf[i + 1] as usize;
        if i + 2 + len > buf.len() {
            break;
        }
        out.push((kind, &buf[i + 2..i + 2 + len]));
        i += 2 + len;
    }
    out
}

/// The comment TLV of a table/chain/rule/element udata blob (all use type 0).
pub(crate) fn comment(buf: &[u8], kind: u8) -> Option<String> {
    parse(buf)
        .into_iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, v)| {
            let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
            String::from_utf8_lossy(&v[..end]).into_owned()
        })
}

/// Comment-only udata, as nft writes it for tables, chains, rules, elements.
pub(crate) fn comment_blob(kind: u8, text: &str) -> Vec<u8> {
    let mut u = Udata::default();
    u.put_strz(kind, text);
    u.0
}

/// The `typeof` nest nft writes for a concatenation declared with `type`:
/// `{ TYPEOF_EXPR = etype, TYPEOF_DATA = {} }`.
pub(crate) fn put_typeof(u: &mut Udata, kind: u8, etype: u32) {
    let mut inner = Udata::default();
    inner.put_u32(sys::UDATA_SET_TYPEOF_EXPR, etype);
    inner.put(sys::UDATA_SET_TYPEOF_DATA, &[]);
    u.put(kind, &inner.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_roundtrip_matches_nft_layout() {
        // nft writes `comment "pod-a"` on an element as 00 06 'pod-a' 00.
        let blob = comment_blob(0, "pod-a");
        assert_eq!(blob, b"\x00\x06pod-a\x00");
        assert_eq!(comment(&blob, 0).as_deref(), Some("pod-a"));
        assert_eq!(comment(&blob, 1), None);
    }

    #[test]
    fn long_comment_is_truncated_on_char_boundary() {
        let s = "é".repeat(200);
        let blob = comment_blob(0, &s);
        assert!(blob.len() <= 257);
        let back = comment(&blob, 0).unwrap();
        assert!(s.starts_with(&back));
    }

    #[test]
    fn truncated_tlv_stops_parsing() {
        assert_eq!(parse(&[0, 5, b'a']).len(), 0);
        assert_eq!(parse(&[7, 1, b'a', 1]).len(), 1);
    }
}

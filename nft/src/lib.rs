//! podnet-nft: a small, typed, pure-Rust nf_tables netlink encoder/decoder.
//!
//! Build objects (`Table`, `Chain`, `Set`, `SetElem`, `Rule` with `Expr`s or
//! the statement helpers in `rule`), queue them in a `Batch` (one atomic
//! transaction), and send it with `Nft::apply` — one `sendmsg`, ACKs matched
//! per message, errors reported with the object that caused them. `Nft`'s
//! `list_*` methods read tables, chains, sets, elements and rules back.
//!
//! Modules: `sys` (kernel numbers), `attr` (TLV writer/reader), `udata`
//! (nft's userdata TLVs), `types` (families, verdicts, datatypes, values,
//! registers), `expr` (expressions and field loads), `objects` (object
//! encodings), `rule` (statement helpers), `batch` (transaction framing,
//! pure), `socket` (netlink I/O), `decode` (dump parsing).

mod attr;
pub mod batch;
pub mod decode;
mod error;
pub mod expr;
pub mod objects;
pub mod rule;
mod socket;
mod sys;
pub mod types;
mod udata;

pub use batch::{Batch, Encoded};
pub use decode::{ChainInfo, ElemInfo, RuleInfo, SetInfo, TableInfo};
pub use error::{Error, Result};
pub use expr::{
    ct_state, ct_status, fib_flags, fib_type, icmp_code, icmpx, nat_flags, CmpOp, CtDir, CtKey,
    DynsetOp, Expr, FibResult, Field, MetaKey, NatKind, NumgenKind, PayloadBase, Reject, SetRef,
};
pub use objects::{
    bridge_priority, prefix_elems, priority, Chain, ChainType, ElemData, ElemDataRef, ElemRef,
    Hook, HookPoint, Policy, Rule, Set, SetElem, SetFlags, Table,
};
pub use socket::{ApplyStats, Nft};
pub use types::{
    encode_concat, encode_concat_into, DataType, Family, Reg, TypeConcat, Val, Verdict,
};

/// Encodes an nft comment as element userdata (what `SetElem::comment` stores).
pub fn comment_userdata(text: &str) -> Vec<u8> {
    udata::comment_blob(0, text)
}

//! The bytes of the few netfilter netlink messages aupgate sends and reads, by hand: nf_tables
//! set elements (add, delete, dump), the ruleset generation, and conntrack entries (dump,
//! delete). Pure functions, checked against bytes the kernel accepted. Nothing here indexes
//! out of bounds or panics on what the kernel sends: a message that does not parse is skipped
//! or reported.
//!
//! Layout (include/uapi/linux/netlink.h, netfilter/nfnetlink.h): a 16-byte `nlmsghdr` in host
//! order, a 4-byte `nfgenmsg` (family, version, resource id in big endian), then attributes
//! (length and type in host order, padded to 4 bytes). nf_tables' and ctnetlink's integer
//! values are big endian.

use std::net::IpAddr;

use crate::clients::MacAddr;

pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLMSG_DONE: u16 = 3;
pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_ACK: u16 = 0x4;
pub(super) const NLM_F_DUMP: u16 = 0x300;
pub(super) const NLM_F_EXCL: u16 = 0x200;
pub(super) const NLM_F_CREATE: u16 = 0x400;
/// An error message whose echoed request is cut to its header (NETLINK_CAP_ACK).
const NLM_F_CAPPED: u16 = 0x100;
/// An error message with extended-ACK attributes after the echoed request.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_OFFS: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;

pub(super) const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
pub(super) const NFT_MSG_DELSETELEM: u16 = 14;
pub(super) const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_GEN_ID: u16 = 1;
const NFTA_GEN_PROC_PID: u16 = 2;
/// Every nf_tables object's first attribute is the name of its table.
const NFTA_ANY_TABLE: u16 = 1;
pub(super) const NFPROTO_INET: u8 = 1;

const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_STATUS: u16 = 3;
/// `IPS_DST_NAT`: the entry's destination was rewritten (our redirects to the portal and DNS).
const IPS_DST_NAT: u32 = 1 << 5;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// The biggest attribute or message: lengths are u16 in attributes.
const MAX_ATTR: usize = u16::MAX as usize;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A message too big for netlink's 16-bit attribute lengths; never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a netlink attribute would exceed 64 KiB")]
pub(super) struct TooBig;

/// One netlink message being written.
pub(super) struct Msg {
    buf: Vec<u8>,
    open: Vec<usize>,
    too_big: bool,
}

impl Msg {
    /// A message of `subsys`'s `kind`, with `flags` (NLM_F_REQUEST is added), sequence `seq`,
    /// for `family` and resource `res_id`.
    pub(super) fn new(subsys: u16, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&((subsys << 8) | kind).to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.push(family);
        buf.push(0);
        buf.extend_from_slice(&res_id.to_be_bytes());
        Self {
            buf,
            open: Vec::new(),
            too_big: false,
        }
    }

    fn pad(&mut self) {
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// Appends attribute `kind` holding `value`.
    pub(super) fn attr(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        self.too_big |= len > MAX_ATTR;
        self.buf.extend_from_slice(&(len.min(MAX_ATTR) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
        self
    }

    /// Opens nested attribute `kind`; `end` closes the innermost one.
    pub(super) fn begin(&mut self, kind: u16) -> &mut Self {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub(super) fn end(&mut self) -> &mut Self {
        if let Some(start) = self.open.pop() {
            let len = self.buf.len() - start;
            self.too_big |= len > MAX_ATTR;
            self.buf[start..start + 2].copy_from_slice(&(len.min(MAX_ATTR) as u16).to_ne_bytes());
        }
        self
    }

    /// The message's bytes, its length filled in.
    pub(super) fn finish(mut self) -> Result<Vec<u8>, TooBig> {
        while !self.open.is_empty() {
            self.end();
        }
        if self.too_big || u32::try_from(self.buf.len()).is_err() {
            return Err(TooBig);
        }
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        Ok(self.buf)
    }
}

/// What one batch does to the `allowed` set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Element {
    /// Add `mac` for `timeout_ms`; with `exclusive`, fail (EEXIST) if it is there already.
    Add {
        mac: MacAddr,
        timeout_ms: u64,
        exclusive: bool,
    },
    /// Remove `mac`; fails (ENOENT) if it is absent.
    Delete(MacAddr),
}

/// One nf_tables element change as a message of its own (one answer each), for `table`'s `set`.
pub(super) fn element(table: &str, set: &str, change: Element, seq: u32) -> Result<Vec<u8>, TooBig> {
    let (kind, flags, mac, timeout) = match change {
        Element::Add {
            mac,
            timeout_ms,
            exclusive,
        } => (
            NFT_MSG_NEWSETELEM,
            NLM_F_ACK | NLM_F_CREATE | if exclusive { NLM_F_EXCL } else { 0 },
            mac,
            Some(timeout_ms),
        ),
        Element::Delete(mac) => (NFT_MSG_DELSETELEM, NLM_F_ACK, mac, None),
    };
    let mut m = Msg::new(NFNL_SUBSYS_NFTABLES, kind, flags, seq, NFPROTO_INET, 0);
    m.attr(NFTA_SET_ELEM_LIST_TABLE, &c_string(table))
        .attr(NFTA_SET_ELEM_LIST_SET, &c_string(set))
        .begin(NFTA_SET_ELEM_LIST_ELEMENTS)
        .begin(NFTA_LIST_ELEM)
        .begin(NFTA_SET_ELEM_KEY)
        .attr(NFTA_DATA_VALUE, &mac.octets())
        .end();
    if let Some(ms) = timeout {
        m.attr(NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
    }
    m.finish()
}

/// A batch's opening (`end` false) or closing message, for nf_tables.
pub(super) fn batch_mark(end: bool, seq: u32) -> Vec<u8> {
    let kind = if end { NFNL_MSG_BATCH_END } else { NFNL_MSG_BATCH_BEGIN };
    // Subsystem 0: batch control messages are nfnetlink's own, aimed at nf_tables by res_id.
    let m = Msg::new(0, kind, 0, seq, 0, NFNL_SUBSYS_NFTABLES);
    // A 20-byte message with no attributes cannot be too big.
    m.finish().unwrap_or_default()
}

/// A dump of `table`'s `set`.
pub(super) fn dump_set(table: &str, set: &str, seq: u32) -> Result<Vec<u8>, TooBig> {
    let mut m = Msg::new(
        NFNL_SUBSYS_NFTABLES,
        NFT_MSG_GETSETELEM,
        NLM_F_DUMP,
        seq,
        NFPROTO_INET,
        0,
    );
    m.attr(NFTA_SET_ELEM_LIST_TABLE, &c_string(table))
        .attr(NFTA_SET_ELEM_LIST_SET, &c_string(set));
    m.finish()
}

/// A request for the ruleset's generation id.
pub(super) fn get_generation(seq: u32) -> Vec<u8> {
    let m = Msg::new(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN, 0, seq, 0, 0);
    m.finish().unwrap_or_default()
}

/// A dump of every conntrack entry of `ip`'s family (the kernel's own filter by source is not
/// to be trusted for IPv6, so the match is ours: `conntrack_entry`).
pub(super) fn dump_conntrack(v6: bool, seq: u32) -> Vec<u8> {
    let family = if v6 { AF_INET6 } else { AF_INET };
    let m = Msg::new(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_GET, NLM_F_DUMP, seq, family, 0);
    m.finish().unwrap_or_default()
}

fn c_string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// One message read from the kernel.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reply<'a> {
    /// `nlmsg_type`.
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    /// The whole message, header included.
    pub bytes: &'a [u8],
}

impl<'a> Reply<'a> {
    /// The payload after the netlink header.
    fn payload(&self) -> &'a [u8] {
        self.bytes.get(16..).unwrap_or_default()
    }

    /// The attributes after the netfilter header.
    fn attrs(&self) -> Attrs<'a> {
        Attrs(self.bytes.get(20..).unwrap_or_default())
    }

    /// For NLMSG_ERROR: the sequence number it answers, and 0 or the errno (positive).
    pub(super) fn error(&self) -> Option<(u32, i32, Option<u32>)> {
        if self.kind != NLMSG_ERROR {
            return None;
        }
        let p = self.payload();
        let code = i32::from_ne_bytes(p.get(0..4)?.try_into().ok()?);
        let echoed_len = u32_at(p, 4)? as usize;
        let seq = u32_at(p, 12)?;
        let mut offset = None;
        if self.flags & NLM_F_ACK_TLVS != 0 {
            let start = 4 + if self.flags & NLM_F_CAPPED != 0 {
                16
            } else {
                align4(echoed_len)
            };
            for (kind, value) in Attrs(p.get(start..).unwrap_or_default()) {
                if kind == NLMSGERR_ATTR_OFFS {
                    offset = u32_at(value, 0);
                }
            }
        }
        Some((seq, code.saturating_neg(), offset))
    }

    /// The netfilter subsystem and message kind.
    pub(super) fn nf_kind(&self) -> (u16, u16) {
        (self.kind >> 8, self.kind & 0xff)
    }

    /// The netfilter header's family.
    pub(super) fn family(&self) -> Option<u8> {
        self.bytes.get(16).copied()
    }
}

/// The messages of one datagram.
pub(super) fn replies(datagram: &[u8]) -> impl Iterator<Item = Reply<'_>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let rest = datagram.get(at..)?;
        let len = u32_at(rest, 0)? as usize;
        if len < 16 || len > rest.len() {
            return None;
        }
        at += align4(len);
        Some(Reply {
            kind: u16_at(rest, 4)?,
            flags: u16_at(rest, 6)?,
            seq: u32_at(rest, 8)?,
            bytes: rest.get(..len)?,
        })
    })
}

/// Attributes: (type without flags, value).
#[derive(Debug, Clone, Copy)]
pub(super) struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let len = u16_at(self.0, 0)? as usize;
        let kind = u16_at(self.0, 2)? & NLA_TYPE_MASK;
        if len < 4 {
            self.0 = &[];
            return None;
        }
        let value = self.0.get(4..len)?;
        self.0 = self.0.get(align4(len)..).unwrap_or_default();
        Some((kind, value))
    }
}

fn find(attrs: Attrs<'_>, kind: u16) -> Option<&[u8]> {
    let mut attrs = attrs;
    attrs.find(|(k, _)| *k == kind).map(|(_, v)| v)
}

fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// A set element as the dump lists it: its MAC, and the milliseconds it has left (`None`:
/// no timeout, so not ours).
pub(super) fn set_elements(reply: &Reply<'_>) -> Vec<(MacAddr, Option<u64>)> {
    let mut out = Vec::new();
    let Some(list) = find(reply.attrs(), NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return out;
    };
    for (kind, elem) in Attrs(list) {
        if kind != NFTA_LIST_ELEM {
            continue;
        }
        let key = find(Attrs(elem), NFTA_SET_ELEM_KEY).and_then(|k| find(Attrs(k), NFTA_DATA_VALUE));
        let Some(mac) = key.and_then(|k| <[u8; 6]>::try_from(k).ok()).map(MacAddr::new) else {
            continue;
        };
        let has_timeout = find(Attrs(elem), NFTA_SET_ELEM_TIMEOUT).is_some();
        let left = find(Attrs(elem), NFTA_SET_ELEM_EXPIRATION).and_then(be_u64);
        out.push((mac, if has_timeout { left.or(Some(0)) } else { None }));
    }
    out
}

/// The generation id in a NEWGEN message.
pub(super) fn generation(reply: &Reply<'_>) -> Option<u32> {
    let v = find(reply.attrs(), NFTA_GEN_ID)?;
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

/// The process id in a NEWGEN event: who made the change.
pub(super) fn generation_pid(reply: &Reply<'_>) -> Option<u32> {
    let v = find(reply.attrs(), NFTA_GEN_PROC_PID)?;
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

/// The table an nf_tables event is about, and its family.
pub(super) fn event_table<'a>(reply: &Reply<'a>) -> Option<(u8, &'a [u8])> {
    let name = find(reply.attrs(), NFTA_ANY_TABLE)?;
    Some((reply.family()?, name.strip_suffix(&[0]).unwrap_or(name)))
}

/// The set an element event (NEWSETELEM, DELSETELEM) is about.
pub(super) fn event_set<'a>(reply: &Reply<'a>) -> Option<&'a [u8]> {
    let name = find(reply.attrs(), NFTA_SET_ELEM_LIST_SET)?;
    Some(name.strip_suffix(&[0]).unwrap_or(name))
}

/// The family, original tuple (its attributes), original source and id of a conntrack entry
/// as a dump part or an event gives it.
fn conntrack_parts<'a>(reply: &Reply<'a>) -> Option<(u8, &'a [u8], IpAddr, u32)> {
    let family = reply.family()?;
    let tuple = find(reply.attrs(), CTA_TUPLE_ORIG)?;
    let ip = find(Attrs(tuple), CTA_TUPLE_IP)?;
    let source: IpAddr = match family {
        AF_INET => <[u8; 4]>::try_from(find(Attrs(ip), CTA_IP_V4_SRC)?).ok()?.into(),
        AF_INET6 => <[u8; 16]>::try_from(find(Attrs(ip), CTA_IP_V6_SRC)?).ok()?.into(),
        _ => return None,
    };
    let id = find(reply.attrs(), CTA_ID)
        .and_then(|v| <[u8; 4]>::try_from(v).ok())
        .map_or(0, u32::from_be_bytes);
    Some((family, tuple, source, id))
}

/// The delete that removes exactly the entry in `reply`: its original tuple, zone and id
/// echoed back (the id makes a new flow reusing the tuple safe).
fn conntrack_delete_of(reply: &Reply<'_>, family: u8, tuple: &[u8], seq: u32) -> Result<Vec<u8>, TooBig> {
    let mut m = Msg::new(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE, NLM_F_ACK, seq, family, 0);
    // The tuple goes back as it came, nested.
    m.buf
        .extend_from_slice(&((4 + tuple.len()).min(MAX_ATTR) as u16).to_ne_bytes());
    m.buf.extend_from_slice(&(CTA_TUPLE_ORIG | NLA_F_NESTED).to_ne_bytes());
    m.buf.extend_from_slice(tuple);
    m.pad();
    if let Some(zone) = find(reply.attrs(), CTA_ZONE) {
        m.attr(CTA_ZONE, zone);
    }
    if let Some(id) = find(reply.attrs(), CTA_ID) {
        m.attr(CTA_ID, id);
    }
    m.finish()
}

/// A conntrack entry whose original source is one of `sources`, as the delete that removes
/// exactly it, or `None` for any other entry.
pub(super) fn conntrack_delete(reply: &Reply<'_>, sources: &[IpAddr], seq: u32) -> Option<Result<Vec<u8>, TooBig>> {
    if reply.nf_kind() != (NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW) {
        return None;
    }
    let (family, tuple, source, _) = conntrack_parts(reply)?;
    if !sources.contains(&source) {
        return None;
    }
    Some(conntrack_delete_of(reply, family, tuple, seq))
}

/// What a conntrack message (a dump part, or an event of the groups `NFNLGRP_CONNTRACK_NEW`
/// and `_DESTROY`) says about one entry.
#[derive(Debug, PartialEq)]
pub(super) enum Conntrack {
    /// The entry exists.
    Exists(CtEntry),
    /// The entry with this original source and id is gone.
    Gone(IpAddr, u32),
}

/// A live conntrack entry.
#[derive(Debug, PartialEq)]
pub(super) struct CtEntry {
    pub source: IpAddr,
    pub id: u32,
    /// Its destination was rewritten (`IPS_DST_NAT`): for a device not let through, one of our
    /// redirects to the portal or the router's DNS.
    pub redirected: bool,
    /// The delete that removes exactly it (sequence number 0, to be filled in when sent).
    pub delete: Result<Vec<u8>, TooBig>,
}

/// Whether the entry in `reply` has its destination rewritten (`IPS_DST_NAT`).
pub(super) fn conntrack_redirected(reply: &Reply<'_>) -> bool {
    find(reply.attrs(), CTA_STATUS)
        .and_then(|v| <[u8; 4]>::try_from(v).ok())
        .is_some_and(|v| u32::from_be_bytes(v) & IPS_DST_NAT != 0)
}

/// The entry a conntrack message is about; `None` for any other message.
pub(super) fn conntrack(reply: &Reply<'_>) -> Option<Conntrack> {
    let (subsys, kind) = reply.nf_kind();
    if subsys != NFNL_SUBSYS_CTNETLINK {
        return None;
    }
    let (family, tuple, source, id) = conntrack_parts(reply)?;
    match kind {
        IPCTNL_MSG_CT_NEW => Some(Conntrack::Exists(CtEntry {
            source,
            id,
            redirected: conntrack_redirected(reply),
            delete: conntrack_delete_of(reply, family, tuple, 0),
        })),
        IPCTNL_MSG_CT_DELETE => Some(Conntrack::Gone(source, id)),
        _ => None,
    }
}

/// For tests: a conntrack message about an entry from `src` to 198.51.100.2 in zone 7, as a
/// dump part or new entry's event (`exists`) or a destroy event; `redirected`: with
/// `IPS_DST_NAT` in its status.
#[cfg(test)]
pub(super) fn conntrack_message(exists: bool, src: [u8; 4], id: u32, redirected: bool) -> Vec<u8> {
    let kind = if exists {
        IPCTNL_MSG_CT_NEW
    } else {
        IPCTNL_MSG_CT_DELETE
    };
    let status: u32 = if redirected { IPS_DST_NAT | 0b1010 } else { 0b1010 };
    let mut m = Msg::new(NFNL_SUBSYS_CTNETLINK, kind, 0, 3, AF_INET, 0);
    m.begin(CTA_TUPLE_ORIG)
        .begin(CTA_TUPLE_IP)
        .attr(CTA_IP_V4_SRC, &src)
        .attr(2, &[198, 51, 100, 2])
        .end()
        .end()
        .attr(CTA_STATUS, &status.to_be_bytes())
        .attr(CTA_ID, &id.to_be_bytes())
        .attr(CTA_ZONE, &7u16.to_be_bytes());
    m.finish().unwrap()
}

#[cfg(test)]
mod tests;

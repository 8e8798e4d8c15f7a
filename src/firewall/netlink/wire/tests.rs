use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

/// The bytes of an element add that the kernel (6.18) accepted, as captured in a namespace:
/// 02:00:00:00:00:11 for 60 s into inet aupgate's `allowed`, sequence 99 (little-endian host).
#[test]
fn an_element_add_is_the_bytes_the_kernel_accepted() {
    let bytes = element(
        "aupgate",
        "allowed",
        Element::Add {
            mac: mac("02:00:00:00:00:11"),
            timeout_ms: 60_000,
            exclusive: false,
        },
        99,
    )
    .unwrap();
    let kernel = hex(
        "50000000 0c0a0504 63000000 00000000 01000000 0c000100 61757067 61746500 0c000200 616c6c6f
         77656400 24000380 20000180 10000180 0a000100 02000000 00110000 0c000400 00000000 0000ea60",
    );
    assert_eq!(bytes, kernel);
    let excl = element(
        "aupgate",
        "allowed",
        Element::Add {
            mac: mac("02:00:00:00:00:11"),
            timeout_ms: 60_000,
            exclusive: true,
        },
        99,
    )
    .unwrap();
    assert_eq!(
        u16::from_ne_bytes([excl[6], excl[7]]),
        0x0605,
        "REQUEST|ACK|EXCL|CREATE"
    );
}

#[test]
fn a_batch_begins_and_ends_for_nf_tables() {
    assert_eq!(
        batch_mark(false, 7),
        hex("14000000 10000100 07000000 00000000 0000000a")
    );
    assert_eq!(batch_mark(true, 8), hex("14000000 11000100 08000000 00000000 0000000a"));
}

#[test]
fn a_delete_has_the_key_and_no_timeout() {
    let bytes = element("aupgate", "allowed", Element::Delete(mac("02:00:00:00:00:11")), 5).unwrap();
    let r = replies(&bytes).next().unwrap();
    assert_eq!(r.nf_kind(), (NFNL_SUBSYS_NFTABLES, NFT_MSG_DELSETELEM));
    assert_eq!(r.flags, NLM_F_REQUEST | NLM_F_ACK);
    // Read back as a listing would be: the key, no timeout.
    assert_eq!(set_elements(&r), vec![(mac("02:00:00:00:00:11"), None)]);
}

#[test]
fn listed_elements_give_their_time_left() {
    // A NEWSETELEM as a dump returns it: our own add, with an expiration attribute appended.
    let mut m = Msg::new(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWSETELEM, 0, 1, NFPROTO_INET, 0);
    m.attr(NFTA_SET_ELEM_LIST_TABLE, b"aupgate\0")
        .attr(NFTA_SET_ELEM_LIST_SET, b"allowed\0")
        .begin(NFTA_SET_ELEM_LIST_ELEMENTS);
    for (octet, left) in [(0x11u8, Some(58_900u64)), (0x12, None)] {
        m.begin(NFTA_LIST_ELEM)
            .begin(NFTA_SET_ELEM_KEY)
            .attr(NFTA_DATA_VALUE, &[2, 0, 0, 0, 0, octet])
            .end();
        if let Some(left) = left {
            m.attr(NFTA_SET_ELEM_TIMEOUT, &60_000u64.to_be_bytes())
                .attr(NFTA_SET_ELEM_EXPIRATION, &left.to_be_bytes());
        }
        m.end();
    }
    let bytes = m.finish().unwrap();
    let r = replies(&bytes).next().unwrap();
    assert_eq!(
        set_elements(&r),
        vec![
            (mac("02:00:00:00:00:11"), Some(58_900)),
            (mac("02:00:00:00:00:12"), None)
        ]
    );
}

#[test]
fn errors_give_the_request_and_the_errno() {
    // ENOENT (-2) for sequence 18, capped echo, with the offset of the bad attribute (48).
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(16u32 + 4 + 16 + 8).to_ne_bytes());
    bytes.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
    bytes.extend_from_slice(&(NLM_F_CAPPED | NLM_F_ACK_TLVS).to_ne_bytes());
    bytes.extend_from_slice(&18u32.to_ne_bytes());
    bytes.extend_from_slice(&0u32.to_ne_bytes());
    bytes.extend_from_slice(&(-2i32).to_ne_bytes());
    bytes.extend_from_slice(&hex("30000000 0e0a0500 12000000 00000000"));
    bytes.extend_from_slice(&hex("08000200 30000000"));
    let r = replies(&bytes).next().unwrap();
    assert_eq!(r.error(), Some((18, 2, Some(48))));
}

#[test]
fn nothing_the_kernel_could_send_makes_the_reader_panic() {
    // Truncated, zero-length and lying lengths, at every cut of a real message.
    let good = element("aupgate", "allowed", Element::Delete(mac("02:00:00:00:00:11")), 5).unwrap();
    for cut in 0..good.len() {
        for r in replies(&good[..cut]) {
            let _ = (set_elements(&r), r.error(), generation(&r), event_table(&r));
            let _ = conntrack_delete(&r, &["192.0.2.1".parse().unwrap()], 1);
            let _ = conntrack(&r);
        }
    }
    let mut lying = good.clone();
    lying[20] = 0xff;
    lying[21] = 0xff;
    for r in replies(&lying) {
        let _ = set_elements(&r);
    }
    assert_eq!(replies(&[0u8; 16]).count(), 0, "a zero length ends the datagram");
}

#[test]
fn more_than_64_kib_in_one_attribute_is_refused_not_sent() {
    let mut m = Msg::new(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWSETELEM, 0, 1, NFPROTO_INET, 0);
    m.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
    for _ in 0..3000 {
        m.begin(NFTA_LIST_ELEM).attr(NFTA_DATA_VALUE, &[0; 20]).end();
    }
    assert_eq!(m.finish(), Err(TooBig));
}

/// A conntrack entry of one of the device's addresses becomes the delete of exactly it (its
/// tuple, zone and id); any other address's entry is left alone.
#[test]
fn conntrack_entries_of_the_device_are_deleted_by_their_own_tuple() {
    let entry = |src: [u8; 4]| conntrack_message(true, src, 77, false);
    let ours = entry([192, 0, 2, 10]);
    let r = replies(&ours).next().unwrap();
    let sources: Vec<IpAddr> = vec!["192.0.2.10".parse().unwrap()];
    let delete = conntrack_delete(&r, &sources, 9).unwrap().unwrap();
    let d = replies(&delete).next().unwrap();
    assert_eq!(d.nf_kind(), (NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE));
    assert_eq!((d.seq, d.family()), (9, Some(AF_INET)));
    assert_eq!(find(d.attrs(), CTA_TUPLE_ORIG), find(r.attrs(), CTA_TUPLE_ORIG));
    assert_eq!(find(d.attrs(), CTA_ID), Some(&77u32.to_be_bytes()[..]));
    assert_eq!(find(d.attrs(), CTA_ZONE), Some(&7u16.to_be_bytes()[..]));
    let other = entry([192, 0, 2, 11]);
    assert!(conntrack_delete(&replies(&other).next().unwrap(), &sources, 9).is_none());
}

/// The events the conntrack tracker reads: a new entry comes with the delete that removes it,
/// a destroyed one with its source and id; an nf_tables message is neither.
#[test]
fn conntrack_events_name_the_entry_and_its_delete() {
    let src: IpAddr = "192.0.2.10".parse().unwrap();
    for redirected in [false, true] {
        let new = conntrack_message(true, [192, 0, 2, 10], 77, redirected);
        let r = replies(&new).next().unwrap();
        let Some(Conntrack::Exists(entry)) = conntrack(&r) else {
            panic!("{:?}", conntrack(&r))
        };
        assert_eq!((entry.source, entry.id, entry.redirected), (src, 77, redirected));
        assert_eq!(entry.delete, conntrack_delete(&r, &[src], 0).unwrap());
    }
    let gone = conntrack_message(false, [192, 0, 2, 10], 77, false);
    assert_eq!(
        conntrack(&replies(&gone).next().unwrap()),
        Some(Conntrack::Gone(src, 77))
    );
    let nft = element("aupgate", "allowed", Element::Delete(mac("02:00:00:00:00:11")), 5).unwrap();
    assert_eq!(conntrack(&replies(&nft).next().unwrap()), None);
}

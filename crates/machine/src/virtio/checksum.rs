//! The Internet checksum (RFC 1071) as virtio-net's checksum offloads need it: completing a
//! transmitted frame's partial checksum (`VIRTIO_NET_F_CSUM`) and verifying a received frame's
//! TCP or UDP checksum on the host, so that the device can tell the guest it is valid
//! (`VIRTIO_NET_HDR_F_DATA_VALID` under `VIRTIO_NET_F_GUEST_CSUM`) and the guest need not sum
//! every byte itself — in an emulated guest that is a loop of guest instructions per byte, here
//! a native one.
//!
//! Written here rather than taken from a crate: the two functions are 80 lines over byte slices,
//! and the packet crates (`etherparse`, `smoltcp`) bring whole parsers for what is a header
//! offset and a sum. The result depends only on the frame's bytes, so it is as deterministic as
//! the frame (a received frame is a logged input; a transmitted one is guest memory).

/// Adds `data` to a running one's-complement sum of big-endian 16-bit words (an odd last byte
/// is padded with zero, as RFC 1071 says).
pub fn add(mut sum: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        sum += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let mut rest = words.remainder().chunks_exact(2);
    for w in &mut rest {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [b] = rest.remainder() {
        sum += u64::from(*b) << 8;
    }
    sum
}

/// Folds a running sum to 16 bits (not complemented).
pub fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Completes a partial checksum as a device does for `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the
/// complement of the sum of `frame[start..]` (whose checksum field holds the driver's
/// pseudo-header sum) is stored at `start + offset`, big-endian, with 0 sent as 0xffff (as
/// Linux's own `skb_checksum_help` does, since 0 means "no checksum" to UDP). `false` if the
/// field does not lie inside the frame.
pub fn complete(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let Some(at) = start.checked_add(offset) else {
        return false;
    };
    if start >= frame.len() || at.checked_add(2).is_none_or(|end| end > frame.len()) {
        return false;
    }
    let c = !fold(add(0, &frame[start..]));
    let c = if c == 0 { 0xffff } else { c };
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// Whether `frame` is an Ethernet frame carrying an unfragmented IPv4 or IPv6 TCP or UDP
/// segment whose checksum is right (a UDP-over-IPv4 datagram without a checksum counts as
/// right: there is nothing to check). Anything else — other protocols, fragments, IPv6
/// extension headers, VLAN tags, truncated headers — is `false`, and the guest checks it
/// itself as it would without the offload.
pub fn l4_valid(frame: &[u8]) -> bool {
    let Some(ethertype) = frame.get(12..ETH_HLEN) else {
        return false;
    };
    let ip = &frame[ETH_HLEN..];
    match u16::from_be_bytes([ethertype[0], ethertype[1]]) {
        ETHERTYPE_IPV4 => ipv4_valid(ip),
        ETHERTYPE_IPV6 => ipv6_valid(ip),
        _ => false,
    }
}

fn ipv4_valid(ip: &[u8]) -> bool {
    let Some(h) = ip.get(..20) else {
        return false;
    };
    let ihl = usize::from(h[0] & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let fragment = u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0;
    if h[0] >> 4 != 4 || ihl < 20 || total < ihl || total > ip.len() || fragment {
        return false;
    }
    let l4 = &ip[ihl..total];
    let proto = h[9];
    if proto == PROTO_UDP && l4.len() >= 8 && l4[6..8] == [0, 0] {
        return true;
    }
    let pseudo = add(0, &h[12..20]) + u64::from(proto) + l4.len() as u64;
    segment_valid(proto, pseudo, l4)
}

fn ipv6_valid(ip: &[u8]) -> bool {
    let Some(h) = ip.get(..40) else {
        return false;
    };
    let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
    if h[0] >> 4 != 6 || 40 + payload > ip.len() {
        return false;
    }
    let l4 = &ip[40..40 + payload];
    let proto = h[6];
    let pseudo = add(0, &h[8..40]) + u64::from(proto) + l4.len() as u64;
    segment_valid(proto, pseudo, l4)
}

/// A TCP or UDP segment whose sum with its pseudo-header's folds to all ones.
fn segment_valid(proto: u8, pseudo: u64, l4: &[u8]) -> bool {
    let min = match proto {
        PROTO_TCP => 20,
        PROTO_UDP => 8,
        _ => return false,
    };
    l4.len() >= min && fold(add(pseudo, l4)) == 0xffff
}

#[cfg(test)]
/// An Ethernet + IPv4 + TCP frame (a SYN with 4 payload bytes) whose checksum field holds
/// the pseudo-header sum only, as Linux hands it to a device with checksum offload.
pub(crate) fn tcp4_partial() -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let payload = b"data";
    let tcp_len = 20 + payload.len();
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, PROTO_TCP, 0, 0];
    ip[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
    ip.extend_from_slice(&[10, 0, 2, 15, 10, 0, 2, 2]);
    let ipsum = !fold(add(0, &ip));
    ip[10..12].copy_from_slice(&ipsum.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut tcp = vec![0u8; 20];
    tcp[0..4].copy_from_slice(&[0x30, 0x39, 0x00, 0x50]);
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    let pseudo = add(0, &ip[12..20]) + u64::from(PROTO_TCP) + tcp_len as u64;
    tcp[16..18].copy_from_slice(&fold(pseudo).to_be_bytes());
    f.extend_from_slice(&tcp);
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(0, &d)), 0xddf2);
        // Odd length: the last byte is the high half of a word.
        assert_eq!(fold(add(0, &[0x12])), 0x1200);
        assert_eq!(fold(add(0, &[0xff, 0xff, 0xff, 0xff, 0x00, 0x01])), 0x0001);
    }

    #[test]
    fn completing_a_partial_checksum_makes_the_segment_valid() {
        let mut f = tcp4_partial();
        assert!(!l4_valid(&f), "a partial checksum does not verify");
        assert!(complete(&mut f, 14 + 20, 16));
        assert!(l4_valid(&f));
        // Any flipped byte of the segment or of the pseudo-header's addresses is caught.
        for i in [14 + 12, 14 + 19, 14 + 20, f.len() - 1] {
            let mut g = f.clone();
            g[i] ^= 0x10;
            assert!(!l4_valid(&g), "byte {i} flipped");
        }
    }

    #[test]
    fn a_field_outside_the_frame_is_refused() {
        let mut f = tcp4_partial();
        let n = f.len();
        assert!(!complete(&mut f, n, 0));
        assert!(!complete(&mut f, n - 1, 0));
        assert!(!complete(&mut f, 14, usize::MAX));
        assert!(!complete(&mut f, usize::MAX, 1));
        assert!(complete(&mut f, n - 2, 0));
    }

    #[test]
    fn udp_zero_is_sent_as_all_ones_and_means_unchecked_on_ipv4() {
        // Two bytes summing to ffff complement to 0, which goes out as ffff.
        let mut f = vec![0xff, 0xff, 0, 0];
        assert!(complete(&mut f, 0, 2));
        assert_eq!(f[2..], [0xff, 0xff]);
        let mut u = tcp4_partial();
        u[14 + 9] = PROTO_UDP;
        u[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
        assert!(l4_valid(&u), "UDP over IPv4 without a checksum");
    }

    #[test]
    fn ipv6_tcp_verifies() {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        let tcp_len = 20u16;
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&tcp_len.to_be_bytes());
        ip.extend_from_slice(&[PROTO_TCP, 64]);
        ip.extend((0..32).map(|i| i as u8));
        let mut tcp = vec![0u8; 20];
        tcp[12] = 5 << 4;
        let pseudo = add(0, &ip[8..40]) + u64::from(PROTO_TCP) + u64::from(tcp_len);
        tcp[16..18].copy_from_slice(&fold(pseudo).to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&tcp);
        assert!(complete(&mut f, 14 + 40, 16));
        assert!(l4_valid(&f));
        f[14 + 8] ^= 1;
        assert!(!l4_valid(&f));
    }

    #[test]
    fn other_frames_are_not_claimed_valid() {
        let good = {
            let mut f = tcp4_partial();
            complete(&mut f, 34, 16);
            f
        };
        let mut fragment = good.clone();
        fragment[14 + 6] |= 0x20; // more fragments
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let mut icmp = good.clone();
        icmp[14 + 9] = 1;
        let mut long_total = good.clone();
        long_total[14 + 2..14 + 4].copy_from_slice(&2000u16.to_be_bytes());
        let mut bad_ihl = good.clone();
        bad_ihl[14] = 0x44;
        for (what, f) in [
            ("fragment", fragment),
            ("arp", arp),
            ("icmp", icmp),
            ("total length beyond the frame", long_total),
            ("ihl below 20", bad_ihl),
            ("truncated", good[..30].to_vec()),
            ("empty", Vec::new()),
        ] {
            assert!(!l4_valid(&f), "{what}");
        }
    }
}

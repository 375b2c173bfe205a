//! ICMP echo packets: checksum, building requests and recognising replies. Pure functions.
//!
//! Byte layout of an echo request/reply (RFC 792 for IPv4, RFC 4443 for IPv6), big-endian:
//!
//! ```text
//! offset 0: type (u8)   8 = IPv4 echo request, 0 = IPv4 echo reply,
//!                       128 = IPv6 echo request, 129 = IPv6 echo reply
//! offset 1: code (u8)   0
//! offset 2: checksum (u16) RFC 1071 ones' complement of the ones' complement sum of the
//!                       ICMP message (IPv4); for IPv6 the kernel fills it (pseudo-header)
//! offset 4: identifier (u16)  Linux ping sockets overwrite it with the socket's "port"
//! offset 6: sequence (u16)
//! offset 8: payload (we send 16 random token bytes + a fixed pattern; replies echo it)
//! ```
//!
//! On RAW IPv4 sockets (both OSes) and on macOS DGRAM IPv4 sockets, a received datagram starts
//! with the IPv4 header (version nibble 4, length = IHL × 4 bytes); Linux DGRAM sockets and all
//! IPv6 sockets deliver the ICMP message alone. [`parse_echo_reply`] handles both.
//!
//! Test vectors: the RFC 1071 §3 example bytes `00 01 f2 03 f4 f5 f6 f7` sum to `0xddf2`,
//! checksum `0x220d`; an IPv4 echo request with id 1, seq 1 and payload
//! `abcdefghijklmnopqrstuvwabcdefghi` (the Windows `ping` payload) has checksum `0x4d5a`.

/// Which IP version the echo travels over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// ICMP over IPv4.
    V4,
    /// ICMPv6.
    V6,
}

impl Family {
    fn request_type(self) -> u8 {
        match self {
            Family::V4 => 8,
            Family::V6 => 128,
        }
    }

    fn reply_type(self) -> u8 {
        match self {
            Family::V4 => 0,
            Family::V6 => 129,
        }
    }
}

/// The RFC 1071 Internet checksum of `data` (odd length padded with a zero byte). A message
/// whose checksum field is correct checksums to 0.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request with `id`, `seq` and `payload`. The IPv4 checksum is filled in; for IPv6 it
/// is left 0 for the kernel.
pub fn echo_request(family: Family, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(8 + payload.len());
    packet.push(family.request_type());
    packet.push(0);
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(payload);
    if family == Family::V4 {
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

/// An echo reply as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoReply<'a> {
    /// Identifier (rewritten by Linux ping sockets: do not match on it).
    pub id: u16,
    /// Sequence number.
    pub seq: u16,
    /// The echoed payload.
    pub payload: &'a [u8],
}

/// Recognise an echo reply in a received datagram, skipping a leading IPv4 header. `None` for
/// anything else: other ICMP types (including our own requests seen on a RAW socket), short
/// or malformed packets, and IPv4 messages whose checksum is wrong.
pub fn parse_echo_reply(family: Family, datagram: &[u8]) -> Option<EchoReply<'_>> {
    let icmp = match family {
        Family::V4 if datagram.first().is_some_and(|b| b >> 4 == 4) => {
            let header_len = usize::from(datagram[0] & 0x0f) * 4;
            if header_len < 20 {
                return None;
            }
            datagram.get(header_len..)?
        }
        _ => datagram,
    };
    if icmp.len() < 8 || icmp[0] != family.reply_type() || icmp[1] != 0 {
        return None;
    }
    if family == Family::V4 && checksum(icmp) != 0 {
        return None;
    }
    Some(EchoReply {
        id: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        payload: &icmp[8..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_known_answer() {
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0x220d);
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(checksum(&[0xff]), 0x00ff, "odd length pads with zero");
    }

    #[test]
    fn windows_ping_request_known_answer() {
        let packet = echo_request(Family::V4, 1, 1, b"abcdefghijklmnopqrstuvwabcdefghi");
        assert_eq!(&packet[..8], &[8, 0, 0x4d, 0x5a, 0, 1, 0, 1]);
        assert_eq!(checksum(&packet), 0, "a correct message checksums to zero");
    }

    #[test]
    fn reply_is_found_with_or_without_ip_header() {
        let mut reply = echo_request(Family::V4, 0x1234, 7, b"token");
        reply[0] = 0;
        reply[2..4].copy_from_slice(&[0, 0]);
        let sum = checksum(&reply);
        reply[2..4].copy_from_slice(&sum.to_be_bytes());
        let expected = EchoReply { id: 0x1234, seq: 7, payload: b"token" };
        assert_eq!(parse_echo_reply(Family::V4, &reply), Some(expected));

        let mut with_header = vec![0x45u8; 1];
        with_header.extend_from_slice(&[0; 19]);
        with_header.extend_from_slice(&reply);
        assert_eq!(parse_echo_reply(Family::V4, &with_header), Some(expected));

        // IHL 6 (24-byte header with options).
        let mut with_options = vec![0x46u8];
        with_options.extend_from_slice(&[0; 23]);
        with_options.extend_from_slice(&reply);
        assert_eq!(parse_echo_reply(Family::V4, &with_options), Some(expected));
    }

    #[test]
    fn non_replies_and_damage_are_ignored() {
        let request = echo_request(Family::V4, 1, 1, b"x");
        assert_eq!(parse_echo_reply(Family::V4, &request), None, "our own request on a RAW socket");
        let mut reply = request.clone();
        reply[0] = 0;
        assert_eq!(parse_echo_reply(Family::V4, &reply), None, "checksum now wrong");
        assert_eq!(parse_echo_reply(Family::V4, &[0x45, 0, 0]), None);
        assert_eq!(parse_echo_reply(Family::V4, &[0x41; 40]), None, "IHL below 5");
        assert_eq!(parse_echo_reply(Family::V4, &[]), None);
        let v6 = [129u8, 0, 0, 0, 0, 9, 0, 3, b'p'];
        assert_eq!(parse_echo_reply(Family::V6, &v6), Some(EchoReply { id: 9, seq: 3, payload: b"p" }));
        assert_eq!(echo_request(Family::V6, 9, 3, b"p")[..4], [128, 0, 0, 0]);
    }
}

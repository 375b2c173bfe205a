//! Pure parsers for the Linux network reader: `/proc/net/dev` and the socket tables
//! `/proc/net/{tcp,tcp6,udp,udp6}`, compiled and tested on every OS.

use crate::ParseError;

/// Counters summed over every interface of `/proc/net/dev`, with psutil's
/// `net_io_counters()` meaning (loopback included, as psutil sums every interface).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetTotals {
    /// Transmit bytes.
    pub bytes_sent: u64,
    /// Receive bytes.
    pub bytes_recv: u64,
    /// Transmit packets.
    pub packets_sent: u64,
    /// Receive packets.
    pub packets_recv: u64,
    /// Receive errors.
    pub errin: u64,
    /// Transmit errors.
    pub errout: u64,
    /// Received packets dropped.
    pub dropin: u64,
    /// Transmitted packets dropped.
    pub dropout: u64,
    /// Interfaces summed.
    pub interfaces: u32,
}

/// Parse `/proc/net/dev`: two header lines, then `name: rx_bytes rx_packets rx_errs rx_drop
/// fifo frame compressed multicast tx_bytes tx_packets tx_errs tx_drop …` per interface.
pub fn parse_proc_net_dev(text: &str) -> Result<NetTotals, ParseError> {
    let mut lines = text.lines();
    let first = lines.next().ok_or(ParseError::Empty)?;
    if first.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    if !first.starts_with("Inter-|") {
        return Err(ParseError::Unrecognised("a /proc/net/dev header (`Inter-|`)"));
    }
    let mut totals = NetTotals::default();
    for line in lines.skip(1) {
        let Some((_, counters)) = line.split_once(':') else { continue };
        let mut values = [0u64; 12];
        let mut fields = counters.split_ascii_whitespace();
        for slot in values.iter_mut() {
            let field = fields.next().ok_or(ParseError::MissingField("transmit counters"))?;
            *slot = field.parse().map_err(|_| ParseError::bad_value("interface counter", field))?;
        }
        let add = |sum: &mut u64, v: u64| *sum = sum.saturating_add(v);
        add(&mut totals.bytes_recv, values[0]);
        add(&mut totals.packets_recv, values[1]);
        add(&mut totals.errin, values[2]);
        add(&mut totals.dropin, values[3]);
        add(&mut totals.bytes_sent, values[8]);
        add(&mut totals.packets_sent, values[9]);
        add(&mut totals.errout, values[10]);
        add(&mut totals.dropout, values[11]);
        totals.interfaces += 1;
    }
    Ok(totals)
}

/// The VPN client an interface name suggests, for names that belong to VPN tunnels:
/// `Some(Some(client))` when the name tells the client, `Some(None)` for a generic tunnel
/// (`tun0`, `utun4`), `None` for anything else.
pub fn vpn_interface_kind(name: &str) -> Option<Option<&'static str>> {
    const KNOWN: [(&str, &str); 8] = [
        ("wg", "WireGuard"),
        ("tailscale", "Tailscale"),
        ("zt", "ZeroTier"),
        ("gpd", "GlobalProtect"),
        ("cscotun", "Cisco AnyConnect"),
        ("ipsec", "IPsec"),
        ("ppp", "PPP"),
        ("nordlynx", "NordVPN"),
    ];
    if let Some((_, client)) = KNOWN.iter().find(|(prefix, _)| name.starts_with(prefix)) {
        return Some(Some(client));
    }
    let generic = ["tun", "tap", "utun", "vpn"];
    generic.iter().any(|prefix| name.starts_with(prefix)).then_some(None)
}

/// Names of the interfaces listed in `/proc/net/dev` (after the two header lines).
pub fn proc_net_dev_names(text: &str) -> impl Iterator<Item = &str> {
    text.lines().skip(2).filter_map(|line| line.split_once(':').map(|(name, _)| name.trim()))
}

/// Number of sockets in one of `/proc/net/{tcp,tcp6,udp,udp6}`: the rows after the `sl`
/// header (every state, as psutil's `net_connections()` lists them).
pub fn count_socket_rows(text: &str) -> Result<u64, ParseError> {
    let mut lines = text.lines();
    let header = lines.next().ok_or(ParseError::Empty)?;
    if header.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    if !header.trim_start().starts_with("sl ") {
        return Err(ParseError::Unrecognised("a socket table header (`sl  local_address …`)"));
    }
    Ok(lines.filter(|line| line.trim_start().split_once(':').is_some_and(|(n, _)| n.parse::<u64>().is_ok())).count()
        as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{check_golden, check_robust, fixture, result_json};

    fn render(name: &str, body: &str) -> Option<serde_json::Value> {
        if name.starts_with("proc-net-dev") {
            Some(result_json(parse_proc_net_dev(body)))
        } else if name.starts_with("proc-net-tcp") || name.starts_with("proc-net-udp") {
            Some(result_json(count_socket_rows(body)))
        } else {
            None
        }
    }

    #[test]
    fn fixtures_match_their_golden_files() {
        check_golden("network", render);
    }

    #[test]
    fn parsers_never_panic() {
        check_robust(
            "network",
            |text| {
                let _ = parse_proc_net_dev(text);
                let _ = count_socket_rows(text);
            },
            render,
        );
    }

    #[test]
    fn loopback_is_summed_as_psutil_does() {
        let totals = parse_proc_net_dev(&fixture("network", "proc-net-dev--lo-eth0-ifb-captured.txt")).expect("parses");
        assert_eq!(totals.interfaces, 4);
        assert_eq!(totals.bytes_recv, 314_521 + 217_246_978);
        assert_eq!(totals.packets_sent, 1469 + 6062);
    }

    #[test]
    fn vpn_interface_names() {
        assert_eq!(vpn_interface_kind("wg0"), Some(Some("WireGuard")));
        assert_eq!(vpn_interface_kind("utun4"), Some(None));
        assert_eq!(vpn_interface_kind("tun0"), Some(None));
        assert_eq!(vpn_interface_kind("eth0"), None);
        assert_eq!(vpn_interface_kind("en0"), None);
        let text = fixture("network", "proc-net-dev--lo-eth0-ifb-captured.txt");
        assert_eq!(proc_net_dev_names(&text).collect::<Vec<_>>(), vec!["lo", "ifb0", "ifb1", "eth0"]);
    }

    #[test]
    fn socket_tables_count_every_row() {
        assert_eq!(count_socket_rows(&fixture("network", "proc-net-tcp6--empty-captured.txt")), Ok(0));
        assert_eq!(count_socket_rows(&fixture("network", "proc-net-udp--one-socket-captured.txt")), Ok(1));
        assert_eq!(
            count_socket_rows("garbage\n"),
            Err(ParseError::Unrecognised("a socket table header (`sl  local_address …`)"))
        );
        let cut = "Inter-|   Receive\n face |bytes\n  eth0: 1 2 3\n";
        assert_eq!(parse_proc_net_dev(cut), Err(ParseError::MissingField("transmit counters")));
    }
}

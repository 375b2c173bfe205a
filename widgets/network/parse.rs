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

/// Sockets counted in `/proc/net/sockstat` or `/proc/net/sockstat6`: TCP in use plus TCP in
/// TIME_WAIT, and UDP in use, of the families the file covers. The sum over both files is the
/// number of rows of `/proc/net/{tcp,tcp6,udp,udp6}` (psutil's `len(net_connections())`),
/// read from two counters instead of walking the socket tables: on a busy machine those hold
/// thousands of rows and cost milliseconds of kernel time to print.
pub fn parse_sockstat(text: &str) -> Result<u64, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let mut total = 0u64;
    let mut seen = false;
    for line in text.lines() {
        let Some((protocol, counters)) = line.split_once(':') else { continue };
        let wanted: &[&str] = match protocol {
            "TCP" => &["inuse", "tw"],
            "UDP" | "TCP6" | "UDP6" => &["inuse"],
            _ => continue,
        };
        seen = true;
        let fields: Vec<&str> = counters.split_ascii_whitespace().collect();
        for pair in fields.chunks(2) {
            if let [name, value] = pair {
                if wanted.contains(name) {
                    let count: u64 = value.parse().map_err(|_| ParseError::bad_value("sockstat counter", value))?;
                    total = total.saturating_add(count);
                }
            }
        }
    }
    if !seen {
        return Err(ParseError::Unrecognised("sockstat lines (`TCP: inuse N …`)"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{check_golden, check_robust, fixture, result_json};

    fn render(name: &str, body: &str) -> Option<serde_json::Value> {
        if name.starts_with("proc-net-dev") {
            Some(result_json(parse_proc_net_dev(body)))
        } else if name.starts_with("proc-net-sockstat") {
            Some(result_json(parse_sockstat(body)))
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
                let _ = parse_sockstat(text);
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
    fn sockstat_sum_equals_the_socket_table_rows_here() {
        // On this machine, now: the counters and the tables psutil walks agree.
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let rows: usize = ["/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"]
            .iter()
            .map(|p| read(p).lines().skip(1).count())
            .sum();
        let counted = parse_sockstat(&read("/proc/net/sockstat")).unwrap_or(0)
            + parse_sockstat(&read("/proc/net/sockstat6")).unwrap_or(0);
        // Sockets open and close between the reads: allow a little drift.
        assert!((counted as i64 - rows as i64).abs() <= 8 + rows as i64 / 20, "sockstat {counted}, rows {rows}");
    }

    #[test]
    fn sockstat_counts_time_wait_and_both_families() {
        let v4 = parse_sockstat(&fixture("network", "proc-net-sockstat--many-time-wait-captured.txt"));
        assert_eq!(v4, Ok(12 + 1080), "TCP inuse + TCP tw + UDP inuse");
        assert_eq!(parse_sockstat(&fixture("network", "proc-net-sockstat6--idle-captured.txt")), Ok(0));
        assert_eq!(parse_sockstat("TCP6: inuse 3\nUDP6: inuse 2\n"), Ok(5));
        assert!(parse_sockstat("sockets: used 84\n").is_err());
        assert!(parse_sockstat("TCP: inuse x\n").is_err());
        let cut = "Inter-|   Receive\n face |bytes\n  eth0: 1 2 3\n";
        assert_eq!(parse_proc_net_dev(cut), Err(ParseError::MissingField("transmit counters")));
    }
}

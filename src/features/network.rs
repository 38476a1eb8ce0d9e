//! IP address comparison: same address, and same network (IPv4 /24, IPv6 /48).

use std::net::IpAddr;

/// Whether `a` and `b` are in the same network: the same /24 for IPv4, the
/// same /48 for IPv6. IPv4-mapped IPv6 addresses compare as IPv4; an IPv4
/// address is never in the same network as a native IPv6 one.
pub fn same_network(a: IpAddr, b: IpAddr) -> bool {
    match (a.to_canonical(), b.to_canonical()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets()[..3] == b.octets()[..3],
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..3] == b.segments()[..3],
        _ => false,
    }
}

/// Whether `a` and `b` are the same address (IPv4-mapped forms compare equal).
pub fn same_address(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn prefixes() {
        assert!(same_network(ip("203.0.113.7"), ip("203.0.113.200")));
        assert!(!same_network(ip("203.0.113.7"), ip("203.0.114.7")));
        assert!(same_network(ip("2001:db8:1::1"), ip("2001:db8:1:ffff::2")));
        assert!(!same_network(ip("2001:db8:1::1"), ip("2001:db8:2::1")));
        assert!(same_network(ip("::ffff:203.0.113.7"), ip("203.0.113.9")));
        assert!(!same_network(ip("203.0.113.7"), ip("2001:db8::1")));
        assert!(same_address(ip("::ffff:203.0.113.7"), ip("203.0.113.7")));
    }
}

//! Address ranges for a receiver's allow-list (`recv --allow ADDR[/PREFIX]`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 address range: `ADDR/PREFIX`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    addr: IpAddr,
    prefix: u8,
}

impl Subnet {
    /// The range of addresses whose first `prefix` bits are those of `addr`; `None` if the
    /// prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Subnet> {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= bits).then_some(Subnet {
            addr: addr.to_canonical(),
            prefix,
        })
    }

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Subnet {
    type Err = String;

    /// `ADDR` (one address) or `ADDR/PREFIX`.
    fn from_str(text: &str) -> Result<Subnet, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?}: not an IP address"))?;
        let prefix = match prefix {
            Some(p) => p
                .parse()
                .map_err(|_| format!("{text:?}: prefix is not a number"))?,
            None if addr.to_canonical().is_ipv4() => 32,
            None => 128,
        };
        Subnet::new(addr, prefix).ok_or_else(|| format!("{text:?}: prefix too long"))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_contain_exactly_their_addresses() {
        let net: Subnet = "10.77.0.0/24".parse().unwrap();
        assert!(net.contains(ip("10.77.0.1")));
        assert!(net.contains(ip("10.77.0.255")));
        assert!(!net.contains(ip("10.77.1.1")));
        assert!(net.contains(ip("::ffff:10.77.0.9")));
        assert!(!net.contains(ip("fe80::1")));
        let one: Subnet = "10.77.0.1".parse().unwrap();
        assert!(one.contains(ip("10.77.0.1")) && !one.contains(ip("10.77.0.2")));
        let all: Subnet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("192.0.2.1")));
        let one_v6: Subnet = "2001:db8::1".parse().unwrap();
        assert_eq!(one_v6.to_string(), "2001:db8::1/128");
        assert!(!one_v6.contains(ip("2001:db8::2")));
        let v6: Subnet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::3")) && !v6.contains(ip("fe80::1")));
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!("10.0.0.0/33".parse::<Subnet>().is_err());
        assert!("10.0.0/8".parse::<Subnet>().is_err());
        assert!("10.0.0.0/x".parse::<Subnet>().is_err());
        assert!("::/129".parse::<Subnet>().is_err());
        assert_eq!(
            "10.1.2.3/8".parse::<Subnet>().unwrap().to_string(),
            "10.1.2.3/8"
        );
    }
}

//! Blocks of IP addresses in CIDR notation, as `server.trusted_proxies` and `ip_filter` name them.
//!
//! ```
//! use parapet_middlewares::ip::IpRange;
//!
//! let office: IpRange = "10.0.0.0/8".parse().unwrap();
//! assert!(office.contains("10.1.2.3".parse().unwrap()));
//! assert!(!office.contains("192.168.1.7".parse().unwrap()));
//! ```

use std::fmt;
use std::net::IpAddr;

/// `ip` as text, written into `buf` (64 bytes hold any address): the same text as its `Display`,
/// IPv4 written by hand (`Display` goes through the formatting machinery, a few hundred instructions
/// each time), IPv6 by `Display`. For what is written per request: `X-Forwarded-For`, access logs.
pub fn format(ip: IpAddr, buf: &mut [u8; 64]) -> &str {
    let len = match ip {
        IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
            len
        }
        IpAddr::V6(_) => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{ip}");
            cursor.position() as usize
        }
    };
    // Digits, dots, hexadecimal digits and colons: ASCII.
    std::str::from_utf8(&buf[..len]).unwrap_or_default()
}

/// A block of IP addresses in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`), or one address. An
/// IPv4-mapped IPv6 block (`::ffff:10.0.0.0/104`) is stored as the IPv4 block it maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Whether `ip` is in the block. An IPv4-mapped IPv6 address (a v4 client of a `[::]` listener)
    /// is matched as the IPv4 address it maps.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask(self.prefix, 32) as u32 == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask(self.prefix, 128) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// The netmask of a `/prefix` block of a `bits`-bit address, in the low `bits` bits.
fn mask(prefix: u8, bits: u32) -> u128 {
    let ones = u128::MAX.checked_shl(bits - u32::from(prefix)).unwrap_or(0);
    if bits == 128 {
        ones
    } else {
        ones & ((1u128 << bits) - 1)
    }
}

impl std::str::FromStr for IpRange {
    type Err = String;

    /// `ADDRESS` or `ADDRESS/PREFIX`. The address bits beyond the prefix must be zero, so a typo
    /// like `10.0.0.1/8` is an error rather than a block far wider than meant.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| {
            format!("invalid address {s:?}: expected an IP or a CIDR block, like \"10.0.0.0/8\", \"192.168.1.7\" or \"2001:db8::/32\"")
        })?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    return Err(format!(
                        "invalid prefix length in {s:?}: expected 0 to {max}"
                    ))
                }
            },
        };
        // A v4-mapped block is the v4 block it maps, as the peers it is compared with are.
        let (network, prefix) = match network {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (network, prefix),
            },
            _ => (network, prefix),
        };
        let masked = match network {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask(prefix, 32) as u32).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask(prefix, 128)).into()),
        };
        if masked != network {
            return Err(format!(
                "{s:?} has address bits set beyond its /{prefix}: did you mean \"{masked}/{prefix}\"?"
            ));
        }
        Ok(IpRange { network, prefix })
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::IpRange;

    #[test]
    fn addresses_are_formatted_as_std_formats_them() {
        let cases = [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "192.168.10.9",
            "::1",
            "2001:db8::8:800:200c:417a",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ];
        for case in cases {
            let ip: std::net::IpAddr = case.parse().unwrap();
            let mut buf = [0u8; 64];
            assert_eq!(super::format(ip, &mut buf), ip.to_string());
        }
    }

    fn range(s: &str) -> IpRange {
        s.parse().unwrap()
    }

    #[test]
    fn ip_ranges_contain_their_block_and_nothing_else() {
        let v4 = range("10.0.0.0/8");
        assert!(v4.contains("10.255.1.2".parse().unwrap()));
        assert!(!v4.contains("11.0.0.1".parse().unwrap()));
        assert!(v4.contains("::ffff:10.1.2.3".parse().unwrap()));
        let one = range("192.168.1.7");
        assert!(one.contains("192.168.1.7".parse().unwrap()));
        assert!(!one.contains("192.168.1.8".parse().unwrap()));
        let v6 = range("2001:db8::/32");
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::5".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(range("0.0.0.0/0").contains("8.8.8.8".parse().unwrap()));
        assert!(range("::/0").contains("2001::1".parse().unwrap()));
        assert!(!range("::/0").contains("8.8.8.8".parse().unwrap()));
        assert_eq!(range("::ffff:10.0.0.0/104"), range("10.0.0.0/8"));
    }

    #[test]
    fn ip_ranges_refuse_what_is_not_a_block() {
        for bad in [
            "10.0.0.1/8",
            "300.0.0.0",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "x",
        ] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
    }
}

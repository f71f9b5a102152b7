//! Which local RDMA ports reach a peer, so that the lanes of one transfer spread over every
//! NIC that can carry them (`send --device`, or on their own when the target alone is
//! given).
//!
//! From `/sys/class/infiniband`: each active port's RoCE v2 IPv4 addresses and the network
//! device each belongs to; from `/proc/net/route`: the subnets each network device reaches
//! directly. A port reaches the peer when its network device has a direct route to the
//! peer's address (or the address is the port's own). Rails on separate subnets cannot be
//! found this way (the peer's other addresses are not known here): name them with `--rail`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// A local RDMA port's RoCE v2 IPv4 address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPort {
    /// The RDMA device (`mlx5_0`, `rxe0`).
    pub device: String,
    /// Its port number.
    pub port: u32,
    /// The network device the address belongs to.
    pub netdev: String,
    /// The address (the port's first RoCE v2 IPv4 GID on that network device).
    pub addr: Ipv4Addr,
}

/// A directly connected route of `/proc/net/route`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Network device.
    pub netdev: String,
    /// Destination network.
    pub dest: Ipv4Addr,
    /// Its mask.
    pub mask: Ipv4Addr,
}

/// The active ports' RoCE v2 IPv4 addresses under `sys` (normally
/// `/sys/class/infiniband`), one per port and network device, by device and port.
pub fn roce_ports(sys: &Path) -> Vec<LocalPort> {
    let mut out = Vec::new();
    let read = |p: &Path| std::fs::read_to_string(p).map(|s| s.trim().to_owned());
    let Ok(devices) = std::fs::read_dir(sys) else {
        return out;
    };
    let mut devices: Vec<_> = devices.flatten().map(|e| e.path()).collect();
    devices.sort();
    for dev in devices {
        let device = dev.file_name().map(|n| n.to_string_lossy().into_owned());
        let (Some(device), Ok(ports)) = (device, std::fs::read_dir(dev.join("ports"))) else {
            continue;
        };
        let mut ports: Vec<_> = ports.flatten().map(|e| e.path()).collect();
        ports.sort();
        for p in ports {
            let Some(port) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if !read(&p.join("state")).is_ok_and(|s| s.ends_with("ACTIVE")) {
                continue;
            }
            let Ok(gids) = std::fs::read_dir(p.join("gids")) else {
                continue;
            };
            let mut indexes: Vec<u32> = gids
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect();
            indexes.sort_unstable();
            let mut seen: Vec<String> = Vec::new();
            for i in indexes {
                let i = i.to_string();
                // Unused entries fail to read their type or device: skipped.
                let roce_v2 = read(&p.join("gid_attrs/types").join(&i))
                    .is_ok_and(|t| t.eq_ignore_ascii_case("RoCE v2"));
                let netdev = read(&p.join("gid_attrs/ndevs").join(&i));
                let addr = read(&p.join("gids").join(&i))
                    .ok()
                    .and_then(|g| ipv4_of_gid(&g));
                if let (true, Ok(netdev), Some(addr)) = (roce_v2, netdev, addr) {
                    if !seen.contains(&netdev) {
                        seen.push(netdev.clone());
                        out.push(LocalPort {
                            device: device.clone(),
                            port,
                            netdev,
                            addr,
                        });
                    }
                }
            }
        }
    }
    out
}

/// The IPv4 address of an IPv4-mapped GID as sysfs writes it
/// (`0000:0000:0000:0000:0000:ffff:0a4d:0001`).
fn ipv4_of_gid(gid: &str) -> Option<Ipv4Addr> {
    let words: Vec<u16> = gid
        .split(':')
        .map(|w| u16::from_str_radix(w, 16).ok())
        .collect::<Option<_>>()?;
    match words.as_slice() {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => {
            let [a, b] = hi.to_be_bytes();
            let [c, d] = lo.to_be_bytes();
            Some(Ipv4Addr::new(a, b, c, d))
        }
        _ => None,
    }
}

/// The directly connected routes (no gateway) in the text of `/proc/net/route`.
pub fn direct_routes(text: &str) -> Vec<Route> {
    let addr = |hex: &str| {
        u32::from_str_radix(hex, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_le_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (netdev, dest, gateway, mask) = (f.first()?, f.get(1)?, f.get(2)?, f.get(7)?);
            (addr(gateway)? == Ipv4Addr::UNSPECIFIED).then_some(Route {
                netdev: (*netdev).to_owned(),
                dest: addr(dest)?,
                mask: addr(mask)?,
            })
        })
        .collect()
}

/// The ports that reach `target` directly: their network device has a direct route to it,
/// or it is their own address. In `ports` order.
pub fn reaching(ports: &[LocalPort], routes: &[Route], target: IpAddr) -> Vec<LocalPort> {
    let IpAddr::V4(target) = target else {
        return Vec::new();
    };
    let t = u32::from(target);
    ports
        .iter()
        .filter(|p| {
            p.addr == target
                || routes
                    .iter()
                    .any(|r| r.netdev == p.netdev && t & u32::from(r.mask) == u32::from(r.dest))
        })
        .cloned()
        .collect()
}

/// This host's ports (from `/sys` and `/proc`) that reach `target`.
pub fn local_ports_reaching(target: IpAddr) -> Vec<LocalPort> {
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    reaching(
        &roce_ports(Path::new("/sys/class/infiniband")),
        &direct_routes(&routes),
        target,
    )
}

/// The RoCE v2 IPv4 address of each named device (its first active port's), in order; a
/// device without one is not found (the error lists those that have one).
pub fn device_addrs(names: &[String]) -> Result<Vec<IpAddr>, crate::Error> {
    device_addrs_in(Path::new("/sys/class/infiniband"), names)
}

/// [`device_addrs`] from the device tree at `sys`.
fn device_addrs_in(sys: &Path, names: &[String]) -> Result<Vec<IpAddr>, crate::Error> {
    let ports = roce_ports(sys);
    names
        .iter()
        .map(|name| {
            ports
                .iter()
                .find(|p| &p.device == name)
                .map(|p| IpAddr::V4(p.addr))
                .ok_or_else(|| crate::Error::DeviceNotFound {
                    wanted: name.clone(),
                    available: ports.iter().map(|p| p.device.clone()).collect(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GID table entry: the GID, its type and network device ("" for an unused entry).
    type Gid<'a> = (&'a str, &'a str, &'a str);

    /// A fake `/sys/class/infiniband`: (device, port, state, GID table).
    fn fake_sys(dir: &Path, devices: &[(&str, u32, &str, &[Gid<'_>])]) {
        for (device, port, state, gids) in devices {
            let p = dir.join(device).join("ports").join(port.to_string());
            for sub in ["gids", "gid_attrs/types", "gid_attrs/ndevs"] {
                std::fs::create_dir_all(p.join(sub)).unwrap();
            }
            std::fs::write(p.join("state"), format!("{state}\n")).unwrap();
            for (i, (gid, kind, netdev)) in gids.iter().enumerate() {
                std::fs::write(p.join("gids").join(i.to_string()), format!("{gid}\n")).unwrap();
                if !kind.is_empty() {
                    std::fs::write(p.join("gid_attrs/types").join(i.to_string()), kind).unwrap();
                    std::fs::write(p.join("gid_attrs/ndevs").join(i.to_string()), netdev).unwrap();
                }
            }
        }
    }

    const ROUTES: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
d0\t00004D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
d2\t00004D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
d1\t00014D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";

    #[test]
    fn ports_on_the_peers_subnet_reach_it() {
        let dir = std::env::temp_dir().join(format!("rdmaft-ports-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let v4 = |a: u8, b: u8| format!("0000:0000:0000:0000:0000:ffff:0a4d:{a:02x}{b:02x}");
        let (a, b, c, d) = (v4(0, 1), v4(1, 1), v4(0, 2), v4(0, 3));
        let link_local = "fe80:0000:0000:0000:0000:0000:0000:0001";
        fake_sys(
            &dir,
            &[
                (
                    "mlx5_0",
                    1,
                    "4: ACTIVE",
                    &[(link_local, "IB/RoCE v1", "d0"), (&a, "RoCE v2", "d0")],
                ),
                ("mlx5_1", 1, "4: ACTIVE", &[(&b, "RoCE v2", "d1")]),
                // Same subnet as mlx5_0, and an unused GID entry without attributes.
                (
                    "mlx5_2",
                    1,
                    "4: ACTIVE",
                    &[("", "", ""), (&c, "RoCE v2", "d2")],
                ),
                ("mlx5_3", 1, "1: DOWN", &[(&d, "RoCE v2", "d0")]),
            ],
        );
        let ports = roce_ports(&dir);
        let names: Vec<_> = ports.iter().map(|p| (p.device.as_str(), p.addr)).collect();
        assert_eq!(
            names,
            [
                ("mlx5_0", Ipv4Addr::new(10, 77, 0, 1)),
                ("mlx5_1", Ipv4Addr::new(10, 77, 1, 1)),
                ("mlx5_2", Ipv4Addr::new(10, 77, 0, 2)),
            ],
            "active ports, RoCE v2 IPv4 GIDs only"
        );
        let routes = direct_routes(ROUTES);
        assert_eq!(
            routes.len(),
            3,
            "the default route has a gateway: {routes:?}"
        );
        let peer = |ip: [u8; 4]| IpAddr::V4(Ipv4Addr::from(ip));
        let reach = |ip| -> Vec<String> {
            reaching(&ports, &routes, peer(ip))
                .into_iter()
                .map(|p| p.device)
                .collect()
        };
        assert_eq!(reach([10, 77, 0, 9]), ["mlx5_0", "mlx5_2"]);
        assert_eq!(reach([10, 77, 1, 9]), ["mlx5_1"]);
        assert!(reach([192, 168, 1, 5]).is_empty(), "only via a gateway");
        // A local address is reached by its own port whatever the routes say.
        assert_eq!(
            reaching(&ports, &[], peer([10, 77, 1, 1]))
                .into_iter()
                .map(|p| p.device)
                .collect::<Vec<_>>(),
            ["mlx5_1"]
        );
        assert!(reaching(&ports, &routes, "::1".parse().unwrap()).is_empty());
        // Devices named (`--device`): each one's address, in the order named.
        let named = |n: &[&str]| {
            let n: Vec<String> = n.iter().map(|s| (*s).to_owned()).collect();
            device_addrs_in(&dir, &n)
        };
        assert_eq!(
            named(&["mlx5_1", "mlx5_0"]).unwrap(),
            [peer([10, 77, 1, 1]), peer([10, 77, 0, 1])]
        );
        // This machine's devices: none is called that.
        assert!(device_addrs(&["rdmaft-no-such-device".to_owned()]).is_err());
        let err = named(&["mlx5_0", "mlx5_3"]).unwrap_err().to_string();
        assert!(err.contains("mlx5_3") && err.contains("mlx5_2"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_ipv4_mapped_gids_give_addresses() {
        assert_eq!(
            ipv4_of_gid("0000:0000:0000:0000:0000:ffff:c0a8:0105"),
            Some(Ipv4Addr::new(192, 168, 1, 5))
        );
        assert_eq!(ipv4_of_gid("fe80:0000:0000:0000:0000:0000:0000:0001"), None);
        assert_eq!(ipv4_of_gid("garbage"), None);
    }
}

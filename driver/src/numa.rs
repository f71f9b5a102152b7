//! Running a lane's threads near its RDMA device: on a machine with several NUMA nodes, a
//! NIC's DMA and the memory the lane touches should share a node. `/sys` says which node a
//! device hangs off (`/sys/class/infiniband/<dev>/device/numa_node`) and which CPUs the
//! node has; the calling thread is then limited to those of its allowed CPUs, and the
//! threads it starts afterwards (the lane's reader or writer) inherit that. Where `/sys`
//! says nothing (Soft-RoCE, one node, no such file) nothing changes.

use rustix::process::{sched_getaffinity, sched_setaffinity, CpuSet};

/// Limits the calling thread to the CPUs of `device`'s NUMA node (within the CPUs it may
/// use already); does nothing when that is unknown or would leave no CPU.
pub(crate) fn pin_near(device: &str) {
    let Some(cpus) = node_of(device).and_then(node_cpus) else {
        return;
    };
    let Ok(allowed) = sched_getaffinity(None) else {
        return;
    };
    let mut set = CpuSet::new();
    let mut any = false;
    for cpu in cpus {
        if cpu < CpuSet::MAX_CPU && allowed.is_set(cpu) {
            set.set(cpu);
            any = true;
        }
    }
    if any {
        let _ = sched_setaffinity(None, &set);
    }
}

/// The NUMA node `device` is attached to, if `/sys` says.
fn node_of(device: &str) -> Option<u32> {
    // A device name comes from the verbs library, but keep it a single path component.
    if device.is_empty() || device.contains('/') || device.starts_with('.') {
        return None;
    }
    let text =
        std::fs::read_to_string(format!("/sys/class/infiniband/{device}/device/numa_node")).ok()?;
    // -1: no node.
    u32::try_from(text.trim().parse::<i32>().ok()?).ok()
}

/// The CPUs of NUMA node `node`.
fn node_cpus(node: u32) -> Option<Vec<usize>> {
    let text =
        std::fs::read_to_string(format!("/sys/devices/system/node/node{node}/cpulist")).ok()?;
    parse_cpu_list(text.trim())
}

/// Parses a kernel CPU list (`0-3,8,10-11`).
fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b - a > 1 << 16 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_as_the_kernel_writes_them() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn an_unknown_device_changes_nothing() {
        let before = sched_getaffinity(None).unwrap();
        pin_near("no-such-device");
        pin_near("../../etc");
        assert!(node_of("../x").is_none());
        assert_eq!(sched_getaffinity(None).unwrap(), before);
    }
}

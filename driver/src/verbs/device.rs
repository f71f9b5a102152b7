//! Device discovery and device contexts.

use super::c_str_lossy;
use super::cm::CmId;
use crate::Error;
use rdma_sys::{
    ibv_close_device, ibv_context, ibv_device, ibv_device_attr, ibv_free_device_list,
    ibv_get_device_list, ibv_get_device_name, ibv_open_device, ibv_query_device,
};
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;

/// The RDMA devices on this host (`ibv_get_device_list`), freed on drop.
///
/// Used to find a device by name and open it; [`Device`]s borrow the list because the C
/// list owns them, while an opened [`Context`] stays valid after the list is gone.
pub struct DeviceList {
    list: NonNull<*mut ibv_device>,
    len: usize,
}

// SAFETY: the list is an immutable array of device pointers after ibv_get_device_list returns;
// libibverbs allows using it from any thread, and only Drop (with &mut self) frees it.
unsafe impl Send for DeviceList {}
// SAFETY: see Send; shared access only reads the immutable array.
unsafe impl Sync for DeviceList {}

impl DeviceList {
    /// Lists the RDMA devices. A kernel without RDMA support gives [`Error::NoDevices`]; an
    /// empty list is not an error here (see [`DeviceList::find`]).
    pub fn new() -> Result<Self, Error> {
        let mut num: std::os::raw::c_int = 0;
        // SAFETY: `num` is a valid out-pointer; the returned array (if non-null) is owned by
        // us until ibv_free_device_list.
        let raw = unsafe { ibv_get_device_list(&mut num) };
        let Some(list) = NonNull::new(raw) else {
            let err = std::io::Error::last_os_error();
            // ENOSYS: the kernel has no RDMA (uverbs) support at all.
            if err.raw_os_error() == Some(libc::ENOSYS) {
                return Err(Error::NoDevices);
            }
            return Err(Error::Verb {
                verb: "ibv_get_device_list",
                source: err,
            });
        };
        Ok(DeviceList {
            list,
            len: usize::try_from(num).unwrap_or(0),
        })
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the host has no RDMA device.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The devices, in the order libibverbs lists them.
    pub fn iter(&self) -> impl Iterator<Item = Device<'_>> + '_ {
        (0..self.len).filter_map(move |i| {
            // SAFETY: `i < len`, and the array has `len` valid entries (plus a NULL end).
            let dev = unsafe { *self.list.as_ptr().add(i) };
            NonNull::new(dev).map(|ptr| Device {
                ptr,
                _list: PhantomData,
            })
        })
    }

    /// The device names (e.g. `rxe0`, `mlx5_0`).
    pub fn names(&self) -> Vec<String> {
        self.iter().map(|d| d.name()).collect()
    }

    /// Finds the device called `wanted`, or the first device when `wanted` is `None`.
    pub fn find(&self, wanted: Option<&str>) -> Result<Device<'_>, Error> {
        let names = self.names();
        let index = select_device(&names, wanted)?;
        self.iter().nth(index).ok_or(Error::NoDevices)
    }
}

impl Drop for DeviceList {
    fn drop(&mut self) {
        // SAFETY: the list came from ibv_get_device_list and is freed exactly once; no Device
        // borrowing it can outlive `self` (lifetime), and opened contexts do not need it.
        unsafe { ibv_free_device_list(self.list.as_ptr()) };
    }
}

impl fmt::Debug for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// Picks a device index from `names`: the one called `wanted`, or the first when `None`.
///
/// Separate from [`DeviceList`] so the choice (and its error messages) can be tested without
/// RDMA hardware.
pub fn select_device(names: &[String], wanted: Option<&str>) -> Result<usize, Error> {
    match wanted {
        None if names.is_empty() => Err(Error::NoDevices),
        None => Ok(0),
        Some(w) => names
            .iter()
            .position(|n| n == w)
            .ok_or_else(|| Error::DeviceNotFound {
                wanted: w.to_owned(),
                available: names.to_vec(),
            }),
    }
}

/// One device of a [`DeviceList`]; open it to use it.
pub struct Device<'a> {
    ptr: NonNull<ibv_device>,
    _list: PhantomData<&'a DeviceList>,
}

impl Device<'_> {
    /// The kernel name of the device (`ibv_get_device_name`).
    pub fn name(&self) -> String {
        // SAFETY: the device pointer is valid while the list is (lifetime 'a); the returned
        // name is a NUL-terminated string inside the device struct.
        unsafe { c_str_lossy(ibv_get_device_name(self.ptr.as_ptr())) }
    }

    /// Opens the device (`ibv_open_device`); the context outlives the device list.
    pub fn open(&self) -> Result<Arc<Context>, Error> {
        // SAFETY: the device pointer is valid while the list is alive (we borrow it).
        let raw = unsafe { ibv_open_device(self.ptr.as_ptr()) };
        let ptr = NonNull::new(raw).ok_or_else(|| Error::last_os("ibv_open_device"))?;
        Ok(Arc::new(Context {
            ptr,
            owner: Owner::Opened,
        }))
    }
}

impl fmt::Debug for Device<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name())
            .finish()
    }
}

/// What a device allows, from `ibv_query_device`: window and queue depths are clamped to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Most work requests one queue of a QP may hold.
    pub max_qp_wr: u32,
    /// Most entries a completion queue may have.
    pub max_cqe: u32,
    /// Most scatter/gather entries per work request.
    pub max_sge: u32,
    /// Largest memory region.
    pub max_mr_size: u64,
}

/// Who is responsible for closing the `ibv_context`.
enum Owner {
    /// We opened it: `ibv_close_device` on drop.
    Opened,
    /// librdmacm opened it for this CM id; holding the id keeps it open.
    Cm(#[allow(dead_code)] Arc<CmId>),
}

/// An open device (`ibv_context`), the parent of PDs, CQs and completion channels.
///
/// Comes either from [`Device::open`] or from a connected/bound [`CmId`] (whose QP must use
/// a PD and CQs of the CM id's own context).
pub struct Context {
    ptr: NonNull<ibv_context>,
    owner: Owner,
}

// SAFETY: libibverbs contexts may be used from any thread (all verbs are thread-safe); only
// Drop closes it.
unsafe impl Send for Context {}
// SAFETY: see Send.
unsafe impl Sync for Context {}

impl Context {
    /// Wraps the context librdmacm opened for `id`; keeps `id` alive as long as the context.
    pub(crate) fn from_cm(ptr: NonNull<ibv_context>, id: Arc<CmId>) -> Arc<Self> {
        Arc::new(Context {
            ptr,
            owner: Owner::Cm(id),
        })
    }

    /// The raw pointer, for the sibling wrappers.
    pub(crate) fn as_ptr(&self) -> *mut ibv_context {
        self.ptr.as_ptr()
    }

    /// The device's limits that size a connection (`ibv_query_device`).
    pub fn limits(&self) -> Result<DeviceLimits, Error> {
        // SAFETY: ibv_device_attr is plain data (integers and a char array); all-zero is a
        // valid value for the call to overwrite.
        let mut attr: ibv_device_attr = unsafe { std::mem::zeroed() };
        // SAFETY: the context is live and `attr` is a valid out-pointer.
        let rc = unsafe { ibv_query_device(self.ptr.as_ptr(), &mut attr) };
        if rc != 0 {
            return Err(Error::from_ret("ibv_query_device", rc));
        }
        let positive = |v: i32| u32::try_from(v).unwrap_or(0);
        Ok(DeviceLimits {
            max_qp_wr: positive(attr.max_qp_wr),
            max_cqe: positive(attr.max_cqe),
            max_sge: positive(attr.max_sge),
            max_mr_size: attr.max_mr_size,
        })
    }

    /// The name of the device this context belongs to.
    pub fn device_name(&self) -> String {
        // SAFETY: a live context always points to its ibv_device, whose name stays valid while
        // the context is open.
        unsafe { c_str_lossy(ibv_get_device_name((*self.ptr.as_ptr()).device)) }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Owner::Opened = self.owner {
            // SAFETY: we opened this context with ibv_open_device and close it exactly once;
            // every PD/CQ/channel made from it holds an Arc to it, so none is left. The
            // return value cannot be acted on in Drop.
            unsafe { ibv_close_device(self.ptr.as_ptr()) };
        }
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("device", &self.device_name())
            .field(
                "owner",
                &match self.owner {
                    Owner::Opened => "ibv_open_device",
                    Owner::Cm(_) => "rdma_cm",
                },
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn first_device_by_default() {
        assert_eq!(select_device(&names(&["rxe0", "mlx5_0"]), None).unwrap(), 0);
    }

    #[test]
    fn device_by_exact_name() {
        let list = names(&["mlx5_0", "mlx5_1", "rxe0"]);
        assert_eq!(select_device(&list, Some("rxe0")).unwrap(), 2);
        assert_eq!(select_device(&list, Some("mlx5_1")).unwrap(), 1);
        // No prefix matching: "mlx5" is not "mlx5_0".
        assert!(matches!(
            select_device(&list, Some("mlx5")),
            Err(Error::DeviceNotFound { .. })
        ));
    }

    #[test]
    fn empty_list_is_a_clear_error() {
        assert!(matches!(select_device(&[], None), Err(Error::NoDevices)));
        match select_device(&[], Some("rxe0")) {
            Err(Error::DeviceNotFound { wanted, available }) => {
                assert_eq!(wanted, "rxe0");
                assert!(available.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

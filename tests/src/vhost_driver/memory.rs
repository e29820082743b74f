//! Guest memory for the test frontend: one memfd-backed region that the
//! daemon maps through `VHOST_USER_SET_MEM_TABLE`.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;

use vhost::VhostUserMemoryRegionInfo;
use vm_memory::{FileOffset, GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion};

/// Guest memory shared with the daemon: a single region starting at guest
/// physical address `base`, backed by a memfd mapped `MAP_SHARED`.
///
/// Pages are only allocated when touched, so generous sizes cost little.
pub struct SharedMemory {
    mem: GuestMemoryMmap<()>,
    base: GuestAddress,
    len: u64,
}

impl SharedMemory {
    /// Creates a memfd of `len` bytes and maps it as guest memory at `base`.
    pub fn new(base: GuestAddress, len: usize) -> io::Result<Self> {
        let file = memfd("msb-test-guest-mem", len)?;
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
            base,
            len,
            Some(FileOffset::new(file, 0)),
        )])
        .map_err(|e| io::Error::other(format!("mapping guest memory memfd: {e}")))?;
        Ok(SharedMemory {
            mem,
            base,
            len: len as u64,
        })
    }

    /// The guest memory, for reads and writes through vm-memory's `Bytes`.
    pub fn mem(&self) -> &GuestMemoryMmap<()> {
        &self.mem
    }

    /// Guest physical address of the first byte.
    pub fn base(&self) -> GuestAddress {
        self.base
    }

    /// Size of the region in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: a region has at least one page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The region description `SET_MEM_TABLE` sends (fd, size, addresses).
    pub fn region_info(&self) -> io::Result<VhostUserMemoryRegionInfo> {
        let region = self
            .mem
            .iter()
            .next()
            .ok_or_else(|| io::Error::other("guest memory has no region"))?;
        VhostUserMemoryRegionInfo::from_guest_region(region)
            .map_err(|e| io::Error::other(format!("describing guest memory region: {e}")))
    }

    /// The frontend ("VMM") virtual address of a guest physical address, which
    /// is what `SET_VRING_ADDR` carries.
    pub fn vmm_addr(&self, gpa: GuestAddress) -> io::Result<u64> {
        let region = self
            .mem
            .find_region(gpa)
            .ok_or_else(|| io::Error::other(format!("address {:#x} is not guest memory", gpa.0)))?;
        let offset = gpa.0 - region.start_addr().0;
        Ok(region.as_ptr() as u64 + offset)
    }
}

/// Creates an anonymous memory file of `len` bytes (close-on-exec).
pub fn memfd(name: &str, len: usize) -> io::Result<File> {
    let mut cname = name.as_bytes().to_vec();
    cname.push(0);
    let cname = CStr::from_bytes_with_nul(&cname).map_err(io::Error::other)?;
    // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len as u64)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn region_is_shared_through_the_memfd() {
        let m = SharedMemory::new(GuestAddress(0x1000), 1 << 20).unwrap();
        m.mem()
            .write_obj(0xdead_beef_u32, GuestAddress(0x2000))
            .unwrap();
        let info = m.region_info().unwrap();
        assert_eq!(info.guest_phys_addr, 0x1000);
        assert_eq!(info.memory_size, 1 << 20);
        assert!(info.mmap_handle >= 0);
        assert_eq!(
            m.vmm_addr(GuestAddress(0x2000)).unwrap(),
            info.userspace_addr + 0x1000
        );
        // A second, independent mapping of the same fd sees the write: this is
        // what the daemon does with the fd it receives.
        let mut buf = [0u8; 4];
        // SAFETY: reading 4 bytes from a valid fd into a 4-byte buffer.
        let n = unsafe {
            libc::pread(
                info.mmap_handle,
                buf.as_mut_ptr().cast(),
                4,
                (info.mmap_offset + 0x1000) as libc::off_t,
            )
        };
        assert_eq!(n, 4);
        assert_eq!(u32::from_le_bytes(buf), 0xdead_beef);
        assert!(m.vmm_addr(GuestAddress(0x1000 + (1 << 20))).is_err());
    }
}

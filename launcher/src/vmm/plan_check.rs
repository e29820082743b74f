//! Plans a backend cannot express faithfully, refused before anything
//! starts (the argv builders themselves are infallible).

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::cloud_hypervisor::ch_value_ok;
use super::{DiskFormat, VmPlan, VmmKind};

/// Longest virtio-fs tag (the device config field is 36 bytes).
pub const MAX_TAG_BYTES: usize = 36;
/// Longest virtio-blk serial (`VIRTIO_BLK_ID_BYTES`).
pub const MAX_SERIAL_BYTES: usize = 20;
/// Size of `sun_path` in `struct sockaddr_un` (path plus NUL).
pub const MAX_SOCKET_PATH: usize = 108;
/// Largest virtqueue QEMU accepts for vhost-user-fs.
pub const MAX_QUEUE_SIZE: u32 = 1024;

/// Why a plan cannot be run by a backend; the message names the culprit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// Checks that `kind` can run `plan` exactly as described: sane sizes,
/// virtio-fs tags and disk serials within their device limits and unique,
/// and for cloud-hypervisor only raw and qcow2 disks (all CH v51-v53 opens) and
/// no path, tag or serial its option parser would misread.
pub fn check_plan(kind: VmmKind, plan: &VmPlan) -> Result<(), PlanError> {
    let err = |m: String| Err(PlanError(m));
    if plan.cpus == 0 {
        return err("the VM needs at least one vCPU".into());
    }
    if plan.memory_mib == 0 {
        return err("the VM needs some memory".into());
    }
    let mut tags = HashSet::new();
    for share in &plan.shares {
        let tag = &share.tag;
        if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
            return err(format!(
                "virtio-fs tag {tag:?}: must be 1 to {MAX_TAG_BYTES} bytes"
            ));
        }
        if !tags.insert(tag.as_str()) {
            return err(format!("virtio-fs tag {tag:?} is used twice"));
        }
        if share.num_queues == 0 {
            return err(format!("virtio-fs tag {tag:?}: needs at least one queue"));
        }
        if !share.queue_size.is_power_of_two() || share.queue_size > MAX_QUEUE_SIZE {
            return err(format!(
                "virtio-fs tag {tag:?}: queue size {} is not a power of two up to {MAX_QUEUE_SIZE}",
                share.queue_size
            ));
        }
    }
    let mut serials = HashSet::new();
    for disk in &plan.disks {
        let serial = &disk.serial;
        if serial.is_empty() || serial.len() > MAX_SERIAL_BYTES {
            return err(format!(
                "disk {}: serial {serial:?} must be 1 to {MAX_SERIAL_BYTES} bytes",
                disk.path.display()
            ));
        }
        if !serials.insert(serial.as_str()) {
            return err(format!("disk serial {serial:?} is used twice"));
        }
    }
    if kind == VmmKind::CloudHypervisor {
        check_for_ch(plan)?;
    }
    Ok(())
}

fn check_for_ch(plan: &VmPlan) -> Result<(), PlanError> {
    let path_ok = |what: &str, p: &Path| -> Result<(), PlanError> {
        if ch_value_ok(p.as_os_str().as_bytes()) {
            Ok(())
        } else {
            Err(PlanError(format!(
                "{what} {}: cloud-hypervisor cannot take this path (it must be UTF-8, \
                 without `,` `\"` `[` `]` or surrounding spaces)",
                p.display()
            )))
        }
    };
    path_ok("kernel", &plan.kernel)?;
    path_ok("initramfs", &plan.initramfs)?;
    path_ok("stdout FIFO", &plan.stdout_fifo)?;
    path_ok("stderr FIFO", &plan.stderr_fifo)?;
    path_ok("run directory", &plan.run_dir)?;
    let api = super::cloud_hypervisor::api_socket(plan);
    if api.as_os_str().len() >= MAX_SOCKET_PATH {
        return Err(PlanError(format!(
            "API socket {}: longer than a unix socket path may be ({} bytes)",
            api.display(),
            MAX_SOCKET_PATH - 1
        )));
    }
    for share in &plan.shares {
        if !ch_value_ok(share.tag.as_bytes()) {
            return Err(PlanError(format!(
                "virtio-fs tag {:?}: cloud-hypervisor cannot take `,` `\"` `[` `]` or surrounding spaces",
                share.tag
            )));
        }
        path_ok(&format!("socket of tag {:?}", share.tag), &share.socket)?;
    }
    for disk in &plan.disks {
        if !matches!(disk.format, DiskFormat::Raw | DiskFormat::Qcow2) {
            return Err(PlanError(format!(
                "disk {}: cloud-hypervisor cannot open {} images (raw and qcow2 only); use \
                 --vmm qemu, or convert it (qemu-img convert -O qcow2)",
                disk.path.display(),
                disk.format.name().to_uppercase()
            )));
        }
        path_ok("disk", &disk.path)?;
        if !ch_value_ok(disk.serial.as_bytes()) {
            return Err(PlanError(format!(
                "disk {}: cloud-hypervisor cannot take serial {:?}",
                disk.path.display(),
                disk.serial
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::test_plans::{full_plan, minimal_plan};

    fn message(kind: VmmKind, plan: &VmPlan) -> String {
        check_plan(kind, plan).unwrap_err().0
    }

    #[test]
    fn sample_plans() {
        assert_eq!(check_plan(VmmKind::Qemu, &minimal_plan()), Ok(()));
        assert_eq!(
            check_plan(VmmKind::CloudHypervisor, &minimal_plan()),
            Ok(())
        );
        assert_eq!(check_plan(VmmKind::Qemu, &full_plan()), Ok(()));
        // Commas in paths and a VMDK disk: fine for QEMU, not for CH.
        let m = message(VmmKind::CloudHypervisor, &full_plan());
        assert!(m.contains("/run/x/odd,name.sock"), "{m}");
    }

    #[test]
    fn ch_refuses_formats_other_than_raw_and_qcow2() {
        let mut plan = full_plan();
        plan.shares[1].socket = "/run/x/m0.sock".into();
        plan.disks[1].path = "/data/ab.qcow2".into();
        let m = message(VmmKind::CloudHypervisor, &plan);
        assert!(
            m.starts_with("disk /data/c.vmdk: cloud-hypervisor cannot open VMDK"),
            "{m}"
        );
        plan.disks[2].format = DiskFormat::Vdi;
        let m = message(VmmKind::CloudHypervisor, &plan);
        assert!(m.contains("cannot open VDI images"), "{m}");
        plan.disks.pop();
        assert_eq!(check_plan(VmmKind::CloudHypervisor, &plan), Ok(()));
        plan.run_dir = format!("/{}", "r".repeat(100)).into();
        let m = message(VmmKind::CloudHypervisor, &plan);
        assert!(m.contains("longer than a unix socket path"), "{m}");
    }

    #[test]
    fn device_limits() {
        let mut plan = full_plan();
        plan.shares[0].tag = "t".repeat(37);
        assert!(message(VmmKind::Qemu, &plan).contains("must be 1 to 36 bytes"));
        plan.shares[0].tag = "msb-m0".into();
        assert!(message(VmmKind::Qemu, &plan).contains("used twice"));
        plan = full_plan();
        plan.shares[0].queue_size = 2048;
        assert!(message(VmmKind::Qemu, &plan).contains("queue size 2048"));
        plan = full_plan();
        plan.disks[0].serial = "s".repeat(21);
        assert!(message(VmmKind::Qemu, &plan).contains("1 to 20 bytes"));
        plan = full_plan();
        plan.disks[2].serial = "msb-d0".into();
        assert!(message(VmmKind::Qemu, &plan).contains("used twice"));
        plan = minimal_plan();
        plan.cpus = 0;
        assert!(check_plan(VmmKind::Qemu, &plan).is_err());
    }
}

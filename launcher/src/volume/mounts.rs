//! Named mounts of `msb run`: each `MountSpec::Volume` is resolved through
//! the store (`mode=existing|create|ensure-exists`), leased for the VM's
//! lifetime, and turned into what the run knows how to start:
//! - a dir volume becomes a share served by `virtiofsd-msb` on the volume
//!   directory, with `--quota-mib` and the volume's shared `--quota-file`
//!   when it has a quota (every daemon of the volume, in this run or
//!   another, and `msb volume fs` draw from one budget);
//! - a disk volume becomes a virtio-blk disk (`disk.raw`, raw, ext4; the
//!   image is pinned as raw like any `--disk`, see `volumes::disk_image`).
//!
//! The leases come back to the caller, who keeps them until the VMM and
//! the daemons are gone (the run's `Session` drops them last).

use volumes::{Error, Lease, LeaseRequest, Store, VolumeKind};

use crate::exit::RunError;
use crate::spec::{MountSpec, SharePolicy, ShareQuota, VolumeMount};

/// What a lease of `msb run` says holds the volume.
pub const HOLDER: &str = "msb run";

/// Mounts with every named volume resolved, and the leases to hold.
pub struct Resolved {
    /// No `MountSpec::Volume` left.
    pub mounts: Vec<MountSpec>,
    /// One per named mount, released on drop.
    pub leases: Vec<Lease>,
}

/// The exit status for a store error of a mount: what the user asked for
/// does not fit the store (usage, 2) or the store failed (125).
fn run_error(v: &VolumeMount, e: Error) -> RunError {
    let hint = match &e {
        Error::NotFound(n) => format!(
            " (create it with `msb volume create {n}`, or mount with \
             --mount type=volume,src={n},dst=…,mode=ensure-exists)"
        ),
        _ => String::new(),
    };
    let message = format!("mount {:?}: {e}{hint}", v.spec);
    let usage = e.is_usage()
        || matches!(
            e,
            Error::NotFound(_) | Error::AlreadyExists(_) | Error::Mismatch { .. }
        );
    if usage {
        RunError::usage(message)
    } else {
        RunError::launcher(message)
    }
}

/// Resolves and leases every named mount in `mounts` (in order), opening
/// the store only when there is one.
pub fn resolve(mounts: Vec<MountSpec>, holder: &str) -> Result<Resolved, RunError> {
    if !mounts.iter().any(|m| matches!(m, MountSpec::Volume(_))) {
        return Ok(Resolved {
            mounts,
            leases: Vec::new(),
        });
    }
    let mut store =
        Store::open_default().map_err(|e| RunError::launcher(format!("volume store: {e}")))?;
    let mut out = Resolved {
        mounts: Vec::with_capacity(mounts.len()),
        leases: Vec::new(),
    };
    for m in mounts {
        let MountSpec::Volume(v) = m else {
            out.mounts.push(m);
            continue;
        };
        let h = store
            .provision(&v.name, &v.provision)
            .map_err(|e| run_error(&v, e))?;
        let has_policy = v.policy.stat_virt.is_some() || v.policy.host_perms.is_some();
        if h.kind == VolumeKind::Disk && has_policy {
            return Err(RunError::usage(format!(
                "mount {:?}: stat-virt and host-perms apply to dir volumes (served by \
                 virtiofsd-msb); {:?} is a disk volume",
                v.spec, v.name
            )));
        }
        let lease = store
            .lease(
                &v.name,
                &LeaseRequest {
                    holder: holder.into(),
                    target: Some(v.guest.clone()),
                    readonly: v.flags.ro,
                },
            )
            .map_err(|e| run_error(&v, e))?;
        out.leases.push(lease);
        tracing::info!("volume {} ({}) on {}", v.name, h.kind, v.guest);
        out.mounts.push(match h.disk_image() {
            Some(image) => MountSpec::Disk {
                format: volumes::disk_image::volume_image_format(&image),
                host: image,
                guest: v.guest,
                fstype: h.disk_fstype.clone(),
                flags: v.flags,
            },
            None => MountSpec::Bind {
                host: h.path.clone(),
                guest: v.guest,
                flags: v.flags,
                policy: SharePolicy {
                    quota: h.quota_mib.map(|mib| ShareQuota {
                        mib,
                        file: store.quota_file(&v.name),
                    }),
                    ..v.policy
                },
            },
        });
    }
    Ok(out)
}

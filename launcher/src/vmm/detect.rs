//! Which VMM to use by default, and whether KVM really works here.
//!
//! Default: cloud-hypervisor when it is on `PATH` (at least
//! [`CH_MIN_VERSION`]) and KVM is usable; else QEMU with KVM when usable;
//! else QEMU with TCG.
//!
//! "KVM usable" ([`kvm_status`]) is decided by running guest code, never by
//! the mere existence of `/dev/kvm`: first the millisecond ioctl probe, then
//! a boot of the guest kernel under `qemu -accel kvm` (see
//! [`super::kvm_probe`]); `$MSB_KVM=0|1` skips both. The boot probe costs
//! about a second where KVM works and its full timeout where KVM hangs, so
//! its verdict is kept per process and in a small per-user cache file
//! valid for one host boot (keyed by `/proc/sys/kernel/random/boot_id` and
//! the QEMU and kernel files): `$XDG_RUNTIME_DIR/msb/kvm-probe`, else
//! `${MSB_HOME:-~/.microsandbox}/cache/kvm-probe`. Delete it to re-probe.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::kvm_probe::{self, KvmProbe};
use super::{Accel, VmmKind};

/// Oldest cloud-hypervisor release whose command line we produce: `--disk
/// image_type=` appeared in v51.0 (also needed: bzImage boot since v39,
/// `--disk serial=` since v35, `--pvpanic` since v34).
pub const CH_MIN_VERSION: (u32, u32) = (51, 0);

/// Environment variable naming the QEMU binary (default
/// `qemu-system-x86_64` from `PATH`).
pub const QEMU_ENV: &str = "MSB_QEMU";
/// Environment variable naming the cloud-hypervisor binary (default
/// `cloud-hypervisor` from `PATH`).
pub const CH_ENV: &str = "MSB_CLOUD_HYPERVISOR";
/// Environment variable forcing the KVM verdict: `0`/`no`/`off` (never use
/// KVM) or `1`/`yes`/`on` (use it, no probing).
pub const KVM_ENV: &str = "MSB_KVM";

/// How long the ioctl probe may take.
const IOCTL_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the boot probe may take; a kernel boots to its root-mount
/// panic in well under a second under working KVM.
const BOOT_PROBE_TIMEOUT: Duration = Duration::from_secs(4);
/// How long `cloud-hypervisor --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether KVM runs `kernel` on this host, with the reason when it does not
/// (see the module docs). Computed once per process.
pub fn kvm_status(kernel: &Path) -> KvmProbe {
    static STATUS: Mutex<Option<KvmProbe>> = Mutex::new(None);
    let mut cached = STATUS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(status) = cached.as_ref() {
        return status.clone();
    }
    let start = Instant::now();
    let status = probe_kvm(kernel);
    tracing::debug!("KVM: {status:?} ({} ms)", start.elapsed().as_millis());
    *cached = Some(status.clone());
    status
}

/// True when KVM runs `kernel` on this host (see [`kvm_status`]).
pub fn kvm_usable(kernel: &Path) -> bool {
    kvm_status(kernel).is_usable()
}

/// The default VMM for booting `kernel`, and QEMU's acceleration
/// (cloud-hypervisor always uses KVM, reported as [`Accel::Kvm`]).
pub fn default_vmm(kernel: &Path) -> (VmmKind, Accel) {
    choose(
        ch_candidate().as_deref(),
        kvm_usable(kernel),
        &|program: &Path| ch_version(program),
    )
}

fn probe_kvm(kernel: &Path) -> KvmProbe {
    if let Some(forced) = std::env::var(KVM_ENV)
        .ok()
        .as_deref()
        .and_then(parse_switch)
    {
        return if forced {
            KvmProbe::Usable
        } else {
            KvmProbe::Unusable(format!("${KVM_ENV} says no"))
        };
    }
    let quick = kvm_probe::ioctl_probe(IOCTL_PROBE_TIMEOUT);
    if !quick.is_usable() {
        return quick;
    }
    let qemu = vmm_program(VmmKind::Qemu);
    let qemu = if qemu.components().count() > 1 {
        Some(qemu)
    } else {
        find_in_path(&qemu.to_string_lossy())
    };
    let Some(qemu) = qemu.filter(|_| kernel.is_file()) else {
        // No way to boot a kernel: the ioctl probe is all we have.
        return quick;
    };
    let key = cache_key(&qemu, kernel);
    if let Some(hit) = key.as_deref().and_then(read_cache) {
        return hit;
    }
    let status = kvm_probe::boot_probe(&qemu, kernel, BOOT_PROBE_TIMEOUT);
    if let Some(key) = key {
        write_cache(&key, &status);
    }
    status
}

/// `Some(true)` for 1/yes/on/true, `Some(false)` for 0/no/off/false.
fn parse_switch(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "on" | "true" => Some(true),
        "0" | "no" | "off" | "false" => Some(false),
        _ => None,
    }
}

/// What the boot probe's verdict depends on; `None` when unknown.
fn cache_key(qemu: &Path, kernel: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ident = |p: &Path| -> Option<String> {
        let m = std::fs::metadata(p).ok()?;
        Some(format!(
            "{}:{}:{}:{}",
            p.display(),
            m.ino(),
            m.len(),
            m.mtime()
        ))
    };
    Some(format!(
        "{} {} {}",
        boot_id.trim(),
        ident(qemu)?,
        ident(kernel)?
    ))
}

fn cache_file() -> Option<PathBuf> {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir());
    let dir = match runtime {
        Some(r) => r.join("msb"),
        None => std::env::var_os("MSB_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".microsandbox")))?
            .join("cache"),
    };
    Some(dir.join("kvm-probe"))
}

/// The cached verdict for `key`. File format: the key line, then `usable`
/// or `unusable <reason>`.
fn read_cache(key: &str) -> Option<KvmProbe> {
    let text = std::fs::read_to_string(cache_file()?).ok()?;
    let (stored_key, verdict) = text.split_once('\n')?;
    if stored_key != key {
        return None;
    }
    let verdict = verdict.trim_end();
    if verdict == "usable" {
        Some(KvmProbe::Usable)
    } else {
        let reason = verdict.strip_prefix("unusable ")?;
        Some(KvmProbe::Unusable(format!("{reason} (cached)")))
    }
}

fn write_cache(key: &str, status: &KvmProbe) {
    use std::os::unix::fs::DirBuilderExt;
    let Some(file) = cache_file() else { return };
    let Some(dir) = file.parent() else { return };
    let verdict = match status {
        KvmProbe::Usable => "usable".to_string(),
        KvmProbe::Unusable(why) => format!("unusable {}", why.replace('\n', " ")),
    };
    let tmp = dir.join(format!("kvm-probe.{}", std::process::id()));
    let result = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::write(&tmp, format!("{key}\n{verdict}\n")))
        .and_then(|()| std::fs::rename(&tmp, &file));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!("cannot cache the KVM verdict in {}: {e}", file.display());
    }
}

/// The decision of [`default_vmm`], with its inputs made explicit.
fn choose(
    ch: Option<&Path>,
    kvm: bool,
    version_of: &dyn Fn(&Path) -> Option<(u32, u32)>,
) -> (VmmKind, Accel) {
    if !kvm {
        return (VmmKind::Qemu, Accel::Tcg);
    }
    if let Some(program) = ch {
        match version_of(program) {
            Some(v) if v < CH_MIN_VERSION => tracing::info!(
                "{} is v{}.{}, older than v{}.{}: using QEMU",
                program.display(),
                v.0,
                v.1,
                CH_MIN_VERSION.0,
                CH_MIN_VERSION.1
            ),
            Some(_) => return (VmmKind::CloudHypervisor, Accel::Kvm),
            None => {
                tracing::debug!(
                    "cannot tell the version of {}; using it anyway",
                    program.display()
                );
                return (VmmKind::CloudHypervisor, Accel::Kvm);
            }
        }
    }
    (VmmKind::Qemu, Accel::Kvm)
}

/// The program to run for `kind`: `$MSB_QEMU` / `$MSB_CLOUD_HYPERVISOR` when
/// set, else the plain name (looked up in `PATH` when spawned).
pub fn vmm_program(kind: VmmKind) -> PathBuf {
    let (env, name) = match kind {
        VmmKind::Qemu => (QEMU_ENV, "qemu-system-x86_64"),
        VmmKind::CloudHypervisor => (CH_ENV, "cloud-hypervisor"),
    };
    std::env::var_os(env)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The cloud-hypervisor binary if there is one: `$MSB_CLOUD_HYPERVISOR`
/// when it names an existing file, else `cloud-hypervisor` in `PATH`.
pub fn ch_candidate() -> Option<PathBuf> {
    let program = vmm_program(VmmKind::CloudHypervisor);
    if program.components().count() > 1 {
        return program.is_file().then_some(program);
    }
    find_in_path(&program.to_string_lossy())
}

/// The first executable file called `name` in `PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// `(major, minor)` of a cloud-hypervisor binary, from `--version`
/// (e.g. `cloud-hypervisor v53.0` or `cloud-hypervisor v53.0-246-gae44c29`);
/// `None` when it cannot be run or the output is not understood.
pub fn ch_version(program: &Path) -> Option<(u32, u32)> {
    let mut child = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + VERSION_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = String::new();
    child.stdout.take()?.read_to_string(&mut out).ok()?;
    parse_ch_version(&out)
}

/// Parses the first `vMAJOR.MINOR` (or `MAJOR.MINOR`) word of `text`.
pub fn parse_ch_version(text: &str) -> Option<(u32, u32)> {
    text.split_whitespace().find_map(|word| {
        let word = word.strip_prefix('v').unwrap_or(word);
        let mut parts = word.split(['.', '-']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some((major, minor))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_ch_version("cloud-hypervisor v53.0\n"), Some((53, 0)));
        assert_eq!(
            parse_ch_version("cloud-hypervisor v53.0-246-gae44c2971"),
            Some((53, 0))
        );
        assert_eq!(parse_ch_version("cloud-hypervisor 40.1"), Some((40, 1)));
        assert_eq!(parse_ch_version("cloud-hypervisor"), None);
        assert_eq!(parse_ch_version(""), None);
    }

    #[test]
    fn choice_follows_kvm_and_cloud_hypervisor() {
        let ch = Path::new("/usr/bin/cloud-hypervisor");
        let new = |_: &Path| Some((53, 0));
        let old = |_: &Path| Some((40, 0));
        let unknown = |_: &Path| None;
        assert_eq!(
            choose(Some(ch), true, &new),
            (VmmKind::CloudHypervisor, Accel::Kvm)
        );
        assert_eq!(
            choose(Some(ch), true, &unknown),
            (VmmKind::CloudHypervisor, Accel::Kvm)
        );
        assert_eq!(choose(Some(ch), true, &old), (VmmKind::Qemu, Accel::Kvm));
        assert_eq!(choose(Some(ch), false, &new), (VmmKind::Qemu, Accel::Tcg));
        assert_eq!(choose(None, true, &new), (VmmKind::Qemu, Accel::Kvm));
        assert_eq!(choose(None, false, &new), (VmmKind::Qemu, Accel::Tcg));
    }

    #[test]
    fn switches_parse() {
        assert_eq!(parse_switch("1"), Some(true));
        assert_eq!(parse_switch(" Off "), Some(false));
        assert_eq!(parse_switch("maybe"), None);
    }

    #[test]
    fn a_missing_binary_has_no_version() {
        assert_eq!(ch_version(Path::new("/nonexistent/cloud-hypervisor")), None);
    }
}

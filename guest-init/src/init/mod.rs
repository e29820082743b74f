//! What `msb-init` does as PID 1:
//!
//! 1. mount proc, sysfs, devtmpfs and /run; load the initramfs's kernel
//!    modules in the order the initramfs builder recorded;
//! 2. mount the control share and read the config;
//! 3. apply the configured mounts (under the rootfs share when one is set);
//! 4. run the command with its output on the configured channels and reap
//!    every zombie until it ends; or, for a sandbox, serve the agent
//!    ([`crate::agent`]) until the host asks for a shutdown;
//! 5. kill what the command left running, unmount the disks (so their
//!    filesystems are left clean), write the status back to the control
//!    share, sync, power off.
//!
//! Every failure becomes a [`GuestStatus::InitFailed`] naming the bad input;
//! PID 1 never exits (that would panic the kernel) and never hangs.

pub mod fstype;
pub mod modules;
pub mod mounts;
pub mod process;
pub mod sys;

use std::io::Write;
use std::path::Path;

use crate::config::{
    GuestConfig, GuestStatus, GuestTimings, InitStage, StatusReport, BOOTED_FILE, CONFIG_FILE,
    CONTROL_MOUNT, CONTROL_TAG, NEW_ROOT, STARTED_MESSAGE, STATUS_FILE,
};

/// Writes a line to the kernel console (what the launcher logs on failure).
fn console(msg: &str) {
    if let Ok(mut c) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
        let _ = writeln!(c, "msb-init: {msg}");
    }
}

fn failed(stage: InitStage, message: String) -> GuestStatus {
    GuestStatus::InitFailed { stage, message }
}

/// Runs the whole guest lifetime. Never returns.
pub fn run_as_pid1() -> ! {
    let mut timings = GuestTimings {
        init_start_ms: uptime_ms(),
        ..Default::default()
    };
    let status = match setup_and_run(&mut timings) {
        Ok(status) | Err(status) => status,
    };
    if let GuestStatus::InitFailed { message, .. } = &status {
        console(message);
    }
    // Leave disk images clean: stop what the command left behind, unmount.
    process::kill_remaining();
    for failure in mounts::unmount_disks() {
        console(&failure);
    }
    report(&StatusReport { status, timings });
    sys::power_off()
}

/// Milliseconds since the guest kernel started (0 if the clock fails).
pub fn uptime_ms() -> u64 {
    // CLOCK_BOOTTIME is what /proc/uptime shows, and needs no /proc: the
    // first reading is taken before /proc is mounted.
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the valid timespec we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

fn setup_and_run(timings: &mut GuestTimings) -> Result<GuestStatus, GuestStatus> {
    mounts::mount_system("").map_err(|m| failed(InitStage::Setup, m))?;
    console(STARTED_MESSAGE);
    modules::load_all(Path::new("/"), Path::new(modules::MODULE_LIST))
        .map_err(|m| failed(InitStage::Setup, m))?;
    sys::mkdir_all(CONTROL_MOUNT)
        .map_err(|e| failed(InitStage::Setup, format!("mkdir {CONTROL_MOUNT}: {e}")))?;
    sys::mount(CONTROL_TAG, CONTROL_MOUNT, "virtiofs", 0, "").map_err(|e| {
        failed(
            InitStage::Setup,
            format!("control share {CONTROL_TAG:?}: {e}"),
        )
    })?;
    let config = read_config()?;
    // Tells the launcher the guest is up (its boot deadline ends here).
    let booted = format!("{CONTROL_MOUNT}/{BOOTED_FILE}");
    if let Err(e) = std::fs::File::create(&booted) {
        console(&format!("cannot write {booted}: {e}"));
    }

    let root = match (&config.rootfs_tag, &config.root_overlay) {
        (_, Some(overlay)) => {
            mounts::mount_root_overlay(overlay, NEW_ROOT)
                .map_err(|m| failed(InitStage::Mount, m))?;
            mounts::mount_system(NEW_ROOT).map_err(|m| failed(InitStage::Mount, m))?;
            NEW_ROOT
        }
        (Some(tag), None) => {
            sys::mkdir_all(NEW_ROOT)
                .map_err(|e| failed(InitStage::Mount, format!("mkdir {NEW_ROOT}: {e}")))?;
            sys::mount(tag, NEW_ROOT, "virtiofs", 0, "")
                .map_err(|e| failed(InitStage::Mount, format!("rootfs tag {tag:?}: {e}")))?;
            mounts::mount_system(NEW_ROOT).map_err(|m| failed(InitStage::Mount, m))?;
            NEW_ROOT
        }
        (None, None) => "",
    };
    for m in &config.mounts {
        mounts::apply(root, m).map_err(|msg| failed(InitStage::Mount, msg))?;
    }
    if let Some(channel) = &config.agent {
        // A sandbox: serve the agent until the host asks for a shutdown
        // (which stops every process); then unmount and power off as below.
        let options = crate::agent::AgentOptions {
            root: root.to_string(),
            env: config.env.clone(),
            workdir: config.workdir.clone(),
            owns_machine: true,
            uid: config.uid,
            gid: config.gid,
        };
        timings.command_start_ms = uptime_ms();
        crate::agent::run_in_guest(channel, &options).map_err(|m| failed(InitStage::Setup, m))?;
        timings.command_end_ms = uptime_ms();
        return Ok(GuestStatus::Exited { code: 0 });
    }
    let stdout =
        process::open_channel(&config.stdio.stdout).map_err(|m| failed(InitStage::Setup, m))?;
    let stderr =
        process::open_channel(&config.stdio.stderr).map_err(|m| failed(InitStage::Setup, m))?;
    timings.command_start_ms = uptime_ms();
    let status = process::run(&config, root, stdout, stderr);
    timings.command_end_ms = uptime_ms();
    Ok(status)
}

fn read_config() -> Result<GuestConfig, GuestStatus> {
    let path = format!("{CONTROL_MOUNT}/{CONFIG_FILE}");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| failed(InitStage::Config, format!("{path}: {e}")))?;
    let config: GuestConfig = serde_json::from_str(&text)
        .map_err(|e| failed(InitStage::Config, format!("{path}: {e}")))?;
    config
        .validate()
        .map_err(|m| failed(InitStage::Config, format!("{path}: {m}")))?;
    Ok(config)
}

/// Writes the status file and flushes it to the host.
fn report(report: &StatusReport) {
    let path = format!("{CONTROL_MOUNT}/{STATUS_FILE}");
    let text = serde_json::to_string(report).unwrap_or_default();
    let written = std::fs::File::create(&path).and_then(|mut f| {
        f.write_all(text.as_bytes())?;
        f.sync_all()
    });
    if let Err(e) = written {
        // The launcher reads the console when no status arrives.
        console(&format!("cannot write {path}: {e}; status {text}"));
    }
}

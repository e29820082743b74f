//! Real cloud-hypervisor boots of the exact argv from
//! `msb::vmm::cloud_hypervisor`, with the event monitor watched the way
//! the launcher must: a poweroff ends CH by itself (exit 0, shutdown
//! events), a guest reboot is caught on `vm`/`rebooting` and CH is killed.
//!
//! These run only where `cloud-hypervisor` (v51+; `$MSB_CLOUD_HYPERVISOR`
//! or `PATH`) and a usable KVM exist; elsewhere each test prints why it is
//! skipped and passes. (Not runnable on this project's PVM build hosts.)

mod vmm_boot;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use msb::vmm::ch_events::{ch_exit, watch_events, ChLifecycle, Flow};
use msb::vmm::{
    check_plan, detect, spawn, Accel, Disk, DiskFormat, FsShare, VmPlan, VmmExit, VmmKind,
};
use vmm_boot::{guest, initramfs_with, plan, share_and_disk, skip, test_script, Capture, Guest};

/// A KVM boot takes about a second; this only bounds a hang.
const BOOT_LIMIT: Duration = Duration::from_secs(60);

fn prerequisites(test: &str) -> Option<Guest> {
    let Some(ch) = detect::ch_candidate() else {
        skip(
            test,
            &format!(
                "cloud-hypervisor not found on PATH (or ${}); it is not installable on this host",
                detect::CH_ENV
            ),
        );
        return None;
    };
    if let Some(v) = detect::ch_version(&ch) {
        if v < detect::CH_MIN_VERSION {
            let min = detect::CH_MIN_VERSION;
            skip(
                test,
                &format!(
                    "{} is v{}.{}, older than v{}.{}",
                    ch.display(),
                    v.0,
                    v.1,
                    min.0,
                    min.1
                ),
            );
            return None;
        }
    }
    let g = match guest() {
        Ok(g) => g,
        Err(why) => {
            skip(test, &why);
            return None;
        }
    };
    let kvm = detect::kvm_status(&g.kernel);
    if !kvm.is_usable() {
        skip(test, &format!("KVM is not usable here: {kvm:?}"));
        return None;
    }
    Some(g)
}

struct Run {
    exit: VmmExit,
    life: ChLifecycle,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Boots `plan` under CH, watching its events; kills CH when the lifecycle
/// says so, as the launcher does.
fn boot(plan: &VmPlan) -> Run {
    let out = Capture::start(&plan.stdout_fifo).expect("stdout fifo");
    let err = Capture::start(&plan.stderr_fifo).expect("stderr fifo");
    let start = Instant::now();
    let mut vm = spawn(VmmKind::CloudHypervisor, plan).expect("start cloud-hypervisor");
    let events = vm.events.take().expect("CH has an event pipe");
    let (stop_tx, stop_rx) = mpsc::channel();
    let watcher = std::thread::spawn(move || {
        let mut life = ChLifecycle::default();
        let _ = watch_events(events, |ev| {
            eprintln!("ch event: {}/{} {:?}", ev.source, ev.event, ev.properties);
            let flow = life.observe(&ev);
            if flow == Flow::Stop {
                let _ = stop_tx.send(());
            }
            flow
        });
        life
    });
    let deadline = Instant::now() + BOOT_LIMIT;
    let status = loop {
        if let Ok(Some(st)) = vm.child.try_wait() {
            break st;
        }
        if stop_rx.try_recv().is_ok() || Instant::now() >= deadline {
            break vm
                .child
                .stop(Duration::ZERO)
                .expect("reap cloud-hypervisor");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = start.elapsed();
    let life = watcher.join().expect("watcher");
    let log = std::fs::read_to_string(plan.run_dir.join(msb::vmm::VMM_LOG)).unwrap_or_default();
    eprintln!("cloud-hypervisor log:\n{log}");
    Run {
        exit: ch_exit(status, &life),
        life,
        stdout: String::from_utf8_lossy(&out.finish()).into_owned(),
        stderr: String::from_utf8_lossy(&err.finish()).into_owned(),
        took,
    }
}

#[test]
fn ch_boots_the_test_guest_with_a_share_and_powers_off() {
    let test = "ch_boots_the_test_guest_with_a_share_and_powers_off";
    let Some(g) = prerequisites(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (daemon, disk) = match share_and_disk(dir.path()) {
        Ok(found) => found,
        Err(why) => return skip(test, &why),
    };
    let script = "cat /mnt/hello.txt > /dev/hvc0\necho hvc0-ok > /dev/hvc0\necho ttyS0-ok > /dev/ttyS0\n\
                  for b in /sys/block/vd*; do echo \"disk ${b##*/} serial=$(cat $b/serial) ro=$(cat $b/ro)\"; done\n";
    let initrd = dir.path().join("initrd.img");
    initramfs_with(&g.initramfs, &[test_script(script)], &initrd).unwrap();
    let mut p = plan(
        dir.path(),
        &g,
        &initrd,
        "quiet msb.tag=msbshare",
        Accel::Kvm,
    );
    p.shares.push(FsShare {
        tag: "msbshare".into(),
        socket: daemon.socket.clone(),
        num_queues: 1,
        queue_size: 1024,
    });
    p.disks.push(Disk {
        path: disk,
        format: DiskFormat::Raw,
        readonly: true,
        serial: "msb-d0".into(),
    });
    let run = boot(&p);
    eprintln!(
        "{test}: boot-to-exit {} ms\nstdout: {:?}\nstderr: {:?}",
        run.took.as_millis(),
        run.stdout,
        run.stderr
    );
    assert_eq!(run.exit, VmmExit::PoweredOff);
    assert!(
        run.life.booted && run.life.shutdown && !run.life.reboot && run.life.panic.is_none(),
        "{:?}",
        run.life
    );
    // The virtio console carries the command's stdout; ttys may add \r.
    assert!(
        run.stdout.contains("from-host") && run.stdout.contains("hvc0-ok"),
        "{:?}",
        run.stdout
    );
    // The serial port carries stderr and, here, the test init's console.
    assert!(run.stderr.contains("ttyS0-ok"), "{:?}", run.stderr);
    assert!(
        run.stderr.contains("MSB-TEST-END status=0"),
        "{:?}",
        run.stderr
    );
    assert!(
        run.stderr.contains("disk vda serial=msb-d0 ro=1"),
        "{:?}",
        run.stderr
    );
}

#[test]
fn ch_guest_reboot_is_caught_and_ch_stopped() {
    let test = "ch_guest_reboot_is_caught_and_ch_stopped";
    let Some(g) = prerequisites(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd.img");
    initramfs_with(&g.initramfs, &[test_script("reboot -f\n")], &initrd).unwrap();
    let run = boot(&plan(dir.path(), &g, &initrd, "quiet", Accel::Kvm));
    eprintln!("{test}: stopped after {} ms", run.took.as_millis());
    assert_eq!(run.exit, VmmExit::Rebooted, "{:?}", run.life);
    assert!(run.life.reboot && !run.life.shutdown);
    assert!(
        run.took < BOOT_LIMIT,
        "stopped by the event, not the deadline"
    );
}

/// Needs no cloud-hypervisor: a plan CH cannot express is refused before
/// anything starts.
#[test]
fn ch_spawn_refuses_a_vmdk_disk_without_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let g = Guest {
        kernel: "/nonexistent/vmlinuz".into(),
        initramfs: "/nonexistent/initrd".into(),
        modules: "/nonexistent".into(),
    };
    let mut p = plan(dir.path(), &g, &g.initramfs, "quiet", Accel::Kvm);
    p.disks.push(Disk {
        path: "/data/c.vmdk".into(),
        format: DiskFormat::Vmdk,
        readonly: false,
        serial: "d0".into(),
    });
    let err = spawn(VmmKind::CloudHypervisor, &p).expect_err("VMDK under CH");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("cannot open VMDK"), "{err}");
    assert!(check_plan(VmmKind::Qemu, &p).is_ok());
    // Nothing was created in the run directory (no log, no socket).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
